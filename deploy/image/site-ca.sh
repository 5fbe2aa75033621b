# Sourced by the image builder's RUN steps (Dockerfile). When the build is given a site CA
# bundle (build secret site_ca: the full bundle a TLS-inspecting proxy needs, public CAs
# included), pip and Python's ssl trust it for that step only; it is never in a layer.
if [ -s /run/secrets/site_ca ]; then
  export PIP_CERT=/run/secrets/site_ca SSL_CERT_FILE=/run/secrets/site_ca REQUESTS_CA_BUNDLE=/run/secrets/site_ca
fi
