#!/bin/sh
# Drop from the image's venv what the server never loads (Dockerfile, builder stages):
#   slim-venv.sh VENV
# Measured on the CPU venv: ~360 MB of jax, ~190 MB of torch's headers and test programs,
# ~140 MB of PyTorch3D's debug sections, ~140 MB of packages' own test suites, ~65 MB of
# OpenVINO plugins and model-format readers, ~50 MB of bytecode for transformers models.
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
# The packages' own test suites (pandas/tests, scipy/*/tests, ...): never imported.
find "$site" -type d -name tests -prune -exec rm -rf {} +
# OpenVINO runs ArcFace's ONNX file on the CPU: its GPU/NPU plugins and the readers for
# other model formats (TensorFlow, TFLite, PaddlePaddle, PyTorch, JAX, GGUF) are never loaded.
for lib in intel_gpu_plugin intel_npu_plugin tensorflow_frontend tensorflow_lite_frontend paddle_frontend \
           pytorch_frontend jax_frontend gguf_frontend; do
  rm -f "$site"/openvino/libs/libopenvino_"$lib".so*
done
# transformers imports a model family's code only when asked (SegFormer here): keep the
# sources, drop the bytecode of the other families (compiled in memory if ever imported).
find "$site/transformers/models" -name '*.pyc' ! -path '*/segformer/*' ! -path '*/auto/*' -delete
# Wheels built from source here (PyTorch3D, pydensecrf2) keep their debug sections: strip them.
find "$site" -type f -name '*.so*' -size +1M | while read -r lib; do
  if readelf -S "$lib" 2>/dev/null | grep -q '\.debug_info'; then strip --strip-debug "$lib"; fi
done
