"""Per-model throughput on this machine's devices: each model class called directly
(no Serve), items per second at several batch sizes, on the CPU and, where torch sees
one, on the GPU; ratios printed from one run.

    python -m bench models [--models TDDFA MeshRenderer ArcFace RetinaFace] [--seconds 3]

Needs only numpy, torch, OpenCV, scipy and onnxruntime (the models' own imports): it
also runs on a GPU machine that has no Ray. The weights are read by path from the
repo's .assets/ (where `python -m serve_app.config.assets fetch` puts them): the
resolver needs pydantic, which such a machine may not have.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from deployments.types import Placement

ASSETS = Path(__file__).resolve().parents[2] / ".assets"  # the repo's asset cache (not the resolver: see above)


def tddfa(placement: Placement):
    from deployments.tddfa.model import TDDFA, TDDFAConfig

    model = TDDFA(
        TDDFAConfig(
            weights_path=str(ASSETS / "3ddfa_v2/weights/mb05_120x120.pth"),
            param_stats_path=str(ASSETS / "3ddfa_v2/configs/param_mean_std_62d_120x120.pkl"),
        ),
        placement,
    )
    rng = np.random.default_rng(0)
    return model, lambda n: [rng.integers(0, 255, (n, 120, 120, 3), np.uint8)], "faces"


def mesh_renderer(placement: Placement, backend: str = "torch"):
    from deployments.mesh_renderer.model import MeshRenderer, MeshRendererConfig
    from deployments.mesh_renderer.scene import RenderRequest
    from deployments.tddfa.bfm import MorphableModel

    bfm = MorphableModel.load(ASSETS / "generated/tddfa_bfm_assembled")
    model = MeshRenderer(MeshRendererConfig(backend=backend), placement)
    texture = np.random.default_rng(0).integers(0, 255, (512, 512, 3), np.uint8)
    request = RenderRequest(
        vertices=bfm.mean_vertices(), triangles=bfm.tri, uvs=bfm.uv, texture=texture, camera="frontal", img_size=512
    )
    return model, lambda n: [request] * n, "meshes"


def face_parser(placement: Placement):
    """SegFormerParser serving the local trained UNet stand-in (what runs where the
    SegFormer checkpoint is absent; SegFormer itself needs transformers)."""
    from deployments.segformer_parser.model import SegFormerParser, SegFormerParserConfig
    from deployments.types import ParseRequest

    checkpoint = ASSETS / "face_parsing/unet_small_celebamask_19cls"
    model = SegFormerParser(SegFormerParserConfig(checkpoint_dir=str(checkpoint)), placement)
    roi = np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)
    return model, lambda n: [ParseRequest(roi=roi, labels=(1, 2, 3, 4, 5))] * n, "faces"


def onnx_model(name: str):
    def build(placement: Placement):
        if name == "ArcFace":
            from deployments.arcface.model import ArcFace, ArcFaceConfig

            model = ArcFace(
                ArcFaceConfig(model_path=str(ASSETS / "arcface/mobilefacenet_arcface_128d.onnx")), placement
            )
            crops = np.random.default_rng(0).integers(0, 255, (112, 112, 3), np.uint8)
            return model, lambda n: [np.stack([crops] * n)], "faces"
        from deployments.retinaface.model import RetinaFace, RetinaFaceConfig

        model = RetinaFace(RetinaFaceConfig(model_path=str(ASSETS / "insightface/det_500m.onnx")), placement)
        image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
        return model, lambda n: [image] * n, "images"

    return build


BUILDERS = {
    "TDDFA": tddfa,
    "MeshRenderer": mesh_renderer,
    "SegFormerParser": face_parser,
    "ArcFace": onnx_model("ArcFace"),
    "RetinaFace": onnx_model("RetinaFace"),
}
BATCHES = {
    "TDDFA": (1, 16, 64),
    "MeshRenderer": (1, 8),
    "SegFormerParser": (1, 16),
    "ArcFace": (1, 32),
    "RetinaFace": (1, 8),
}


def rate(model, make, n: int, seconds: float) -> float:
    items = make(n)
    model.predict(items)  # warm-up (CUDA kernels, allocator)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(items)
        done += n
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per model (a replica's num_cpus)")
    args = ap.parse_args(argv)
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"devices: {devices}" + (f" ({torch.cuda.get_device_name(0)})" if "cuda" in devices else ""))
    for name in args.models:
        for n in BATCHES[name]:
            rates = {}
            for device in devices:
                try:
                    model, make, unit = BUILDERS[name](Placement(device=device, threads=args.threads))
                    if (
                        device == "cuda"
                        and "CUDA" not in str(getattr(model, "device", ""))
                        and name in ("ArcFace", "RetinaFace")
                        and "CUDAExecutionProvider" not in _providers(model)
                    ):
                        rates[device] = None  # onnxruntime without CUDA here
                        continue
                    rates[device] = rate(model, make, n, args.seconds)
                except Exception as exc:  # report and go on: one model must not hide the others
                    print(f"  {name} on {device}: {type(exc).__name__}: {exc}")
                    rates[device] = None
            shown = "  ".join(f"{d} {r:8.1f} {unit}/s" if r else f"{d}      n/a" for d, r in rates.items())
            ratio = f"  gpu/cpu {rates['cuda'] / rates['cpu']:.1f}x" if rates.get("cuda") and rates.get("cpu") else ""
            print(f"{name:13s} batch {n:3d}:  {shown}{ratio}")


def _providers(model) -> list[str]:
    session = getattr(getattr(model, "runner", None), "session", None)
    return session.get_providers() if session is not None else []
