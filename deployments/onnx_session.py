"""ONNX Runtime session settings shared by the ONNX model classes (RetinaFace, ArcFace):
the CUDA provider only when the replica was given a GPU, threads = its CPU share."""

from __future__ import annotations


def session_options(num_threads: int):
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    # One replica = its share of cores: intra-op threads follow Ray's num_cpus and no
    # inter-op pool oversubscribes the node.
    opts.intra_op_num_threads = max(1, num_threads)
    opts.inter_op_num_threads = 1
    return opts


def providers(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
