#!/bin/sh
# Drop from the image's venv what the server never loads (Dockerfile, builder stages):
#   slim-venv.sh VENV
# Measured on the CPU venv: ~360 MB of jax, ~190 MB of torch's headers and test binaries,
# ~140 MB of PyTorch3D's debug sections.
set -eu
venv="$1"
site="$venv/lib/python3.11/site-packages"
# mediapipe requires jax/jaxlib for its LLM weight converter (mediapipe.tasks.python.genai)
# only; FaceMesh never imports them.
"$venv/bin/pip" uninstall -q -y jax jaxlib
# torch's C++ headers (for building extensions, done in the builder) and its C++ test
# programs; torch_shm_manager is the one program torch runs (shared-memory tensors).
rm -rf "$site/torch/include" "$site/torch/test"
find "$site/torch/bin" -type f ! -name torch_shm_manager -delete
# Wheels built from source here (PyTorch3D, pydensecrf2) keep their debug sections: strip them.
find "$site" -type f -name '*.so*' -size +1M | while read -r lib; do
  if readelf -S "$lib" 2>/dev/null | grep -q '\.debug_info'; then strip --strip-debug "$lib"; fi
done
