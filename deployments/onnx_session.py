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
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
