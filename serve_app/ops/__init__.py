"""Operations on the product rather than the product: building and checking the
container images (image.py, smoke.py), rehearsing the KubeRay cluster with them."""
