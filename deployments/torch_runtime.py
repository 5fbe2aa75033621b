"""Torch placement shared by the torch model classes (SegFormerParser, TDDFA,
MeshRenderer): the device Ray assigned, threads = the replica's CPU share, and
inference mode around every forward pass. The twin of onnx_session.py."""

from __future__ import annotations

import torch

from deployments.types import Placement


def torch_device(placement: Placement) -> torch.device:
    """The torch device for a placement; sets the process's intra-op threads on CPU
    (one replica = its share of cores: no oversubscription of the node)."""
    if placement.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("this replica was placed on a GPU but torch sees no CUDA device")
        # Ray's CUDA_VISIBLE_DEVICES shows this replica only its own GPU(s): index 0.
        return torch.device("cuda", 0)
    torch.set_num_threads(max(1, placement.threads))
    return torch.device("cpu")


def prepare(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A module ready to serve: on its device, in eval mode, no gradients kept."""
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def inference():
    """The context every forward pass runs in."""
    return torch.inference_mode()
