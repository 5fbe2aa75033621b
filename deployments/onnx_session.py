"""ONNX Runtime session settings shared by the ONNX model classes (RetinaFace, ArcFace):
the CUDA provider only when the replica was placed on a GPU, threads = its CPU share.
The twin of torch_runtime.py."""

from __future__ import annotations

from deployments.types import Placement


def session_options(placement: Placement):
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    # One replica = its share of cores: intra-op threads follow Ray's num_cpus and no
    # inter-op pool oversubscribes the node.
    opts.intra_op_num_threads = max(1, placement.threads)
    opts.inter_op_num_threads = 1
    return opts


def providers(placement: Placement) -> list[str]:
    if placement.device == "cuda":
        import onnxruntime

        # onnxruntime-gpu finds CUDA and cuDNN in the pip `nvidia-*` packages (or torch's)
        # only once they are loaded; without this the CUDA provider silently falls back.
        if hasattr(onnxruntime, "preload_dlls"):
            onnxruntime.preload_dlls()
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def active_provider(session) -> str:
    """The execution provider a session really runs on: the first one ONNX Runtime kept
    (CPUExecutionProvider when the CUDA one was asked for but could not load)."""
    return session.get_providers()[0]
