"""One model's memory under a long run of varied calls, in this process (no Serve): the
resident set size after every --every calls, so a leak shows as a rising curve after
warm-up, and an allocator that settles as a flat one. The soak (bench/faults/soak.py) found
MeshRenderer's replica at 632-869 MiB over 10 minutes with no clear trend; this runs the
same renderer for many more calls than a soak sends it.

    python -m bench model_memory [--model MeshRenderer] [--calls 400] [--every 25]

MeshRenderer gets the anonymize pipeline's requests: the mean face rendered with the
image camera over regions of varying size, and frontal renders, with random textures.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.harness.procs import rss_mib


def mesh_renderer_calls(backend: str):
    """(model, make(k) -> one call's items): varied sizes, like anonymize's faces."""
    from deployments.mesh_renderer.model import MeshRenderer, MeshRendererConfig
    from deployments.mesh_renderer.scene import RenderRequest
    from deployments.tddfa.bfm import MorphableModel
    from serve_app.config.assets import resolve

    bfm = MorphableModel.load(resolve("tddfa-bfm-assembled"))
    model = MeshRenderer(MeshRendererConfig(backend=backend))
    rng = np.random.default_rng(0)
    mean = bfm.mean_vertices()

    def make(k: int) -> list:
        side = int(rng.integers(64, 400))  # the face's region in the photo, pixels
        span = mean[:, :2].max(0) - mean[:, :2].min(0)
        image = mean.copy()
        image[:, :2] = (mean[:, :2] - mean[:, :2].min(0)) / span.max() * (side - 8) + 4
        image[:, 1] = side - image[:, 1]  # image space: y down
        texture = rng.integers(0, 255, (256, 256, 3), np.uint8)
        common = dict(triangles=bfm.tri, uvs=bfm.uv, texture=texture)
        return [
            RenderRequest(vertices=image, camera="image", height=side, width=side, **common),
            RenderRequest(vertices=mean, camera="frontal", img_size=int(rng.choice([128, 256, 512])), **common),
        ]

    return model, make


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["MeshRenderer"], default="MeshRenderer")
    ap.add_argument("--backend", default="auto", help="MeshRenderer backend: auto, pytorch3d or torch")
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--every", type=int, default=25)
    args = ap.parse_args(argv)

    model, make = mesh_renderer_calls(args.backend)
    print(f"{args.model} ({model.backend} backend): RSS {rss_mib(os.getpid()):.0f} MiB before any call")
    start, curve = time.monotonic(), []
    for k in range(1, args.calls + 1):
        model.predict(make(k))
        if k % args.every == 0:
            curve.append(rss_mib(os.getpid()))
            print(f"  after {k:5d} calls ({time.monotonic() - start:6.0f} s): RSS {curve[-1]:7.0f} MiB", flush=True)
    half = len(curve) // 2
    if half:
        print(
            f"second half of the run: RSS {min(curve[half:]):.0f}-{max(curve[half:]):.0f} MiB, "
            f"last minus first of it {curve[-1] - curve[half]:+.0f} MiB"
        )
    return 0
