"""3D anonymisation throughput in faces per second, per stage and end to end, in one run
on the same photos and cores (in this process, no Ray):

  detect               RetinaFace on each photo (the detector's letterboxed copy)
  TDDFA                3DDFA_V2's crops + one batched forward per photo (all its faces)
  reconstruct+segment  dense mesh, 68 landmarks, z-buffer visibility; the eye/mouth cut-out
                       and the inpainting (per photo, counted per face)
  morph+bake           the morph toward the mean face and the UV texture re-bake
  render               MeshRenderer: per face the composite render (image camera) and the
                       two frontal renders (colour, cut-out alpha), as the pipeline asks;
                       batched (--render-batch meshes per predict) and unbatched (one mesh
                       per predict), for the plain-torch and the PyTorch3D backends
  end to end           serve_app.pipelines.anonymize.anonymize with the models behind
                       LocalBatcher (as in the ingress), photos --concurrency at a time,
                       for each renderer backend

then the ratios: render batched / unbatched per backend, torch / PyTorch3D, and each
stage's share of a face's time. BLAS runs one thread, as in a Ray worker (a replica or
Ray Data actor with a fractional CPU gets OMP_NUM_THREADS=1): with two, scipy's
per-simplex LAPACK calls in the bake stall on a busy box. Run by hand:

    .venv/bin/python -m bench anonymize [--tex-size 256] [--img-size 128] [--repeat 1]
        [--photos lfw_Rob_Lowe_0001.jpg ...] [--render-batch 8] [--concurrency 2]

On a GPU image without Ray, pydantic or insightface: detect here once, then run the stages
there with TDDFA and the renderer on CUDA (bench/results/ is git-ignored):

    .venv/bin/python -m bench anonymize --stages-only --detections bench/results/anonymize_detections.json
    python3 -m bench anonymize --stages-only --detections bench/results/anonymize_detections.json --device cuda
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/scipy load (see above)
os.environ.setdefault("FACEGRAPH_ALLOW_STAND_INS", "1")  # the assembled morphable model here

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

# The shared photos with faces; the selfie (20 small faces) only when asked for.
PHOTOS = [
    "3ddfa_JianzhuGuo.jpg",
    "3ddfa_trump_hillary.jpg",
    "facedet1mb_nine_kids.jpg",
    "insightface_t1.jpg",
    "inspireface_woman_search.jpeg",
    "lfw_Nathalie_Baye_0002.jpg",
    "lfw_Rob_Lowe_0001.jpg",
    "lfw_Rob_Lowe_0002.jpg",
    "ultralight_handshake_13.jpg",
]


class Clock:
    """Seconds per stage, accumulated over `with clock("stage"):` blocks."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", nargs="+", default=PHOTOS, help="shared photos (test-images-photos) to run on")
    ap.add_argument("--repeat", type=int, default=1, help="each photo this many times")
    ap.add_argument("--tex-size", type=int, default=256)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--render-batch", type=int, default=8, help="meshes per predict in the batched render")
    ap.add_argument("--concurrency", type=int, default=2, help="photos in flight end to end")
    ap.add_argument("--retinaface", default="retinaface-det-500m")
    ap.add_argument("--tddfa", default="tddfa-mb05-120")
    ap.add_argument(
        "--stages-only",
        action="store_true",
        help="no end-to-end run: needs neither Ray nor pydantic (a bare GPU image)",
    )
    ap.add_argument(
        "--detections",
        metavar="JSON",
        help="RetinaFace's faces per photo: read from this file when it exists (no detect stage: for a "
        "GPU image without insightface), else detected and written there",
    )
    ap.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where TDDFA and the renderer run (the detector stays on CPU, as its replicas do)",
    )
    args = ap.parse_args(argv)

    import cv2
    import numpy as np

    from deployments.mesh_renderer.model import MeshRenderer, MeshRendererConfig, pytorch3d_available
    from deployments.mesh_renderer.scene import RenderRequest
    from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
    from deployments.tddfa.bfm import MorphableModel
    from deployments.tddfa.crops import crops_for_boxes
    from deployments.tddfa.model import TDDFA, TDDFAConfig
    from deployments.types import FIVE_POINT, FaceLandmarks, Placement
    from serve_app.config.assets import resolve
    from serve_app.faces import face3d
    from serve_app.pipelines.locate import detector_input

    photos = resolve("test-images-photos")
    images = [cv2.cvtColor(cv2.imread(str(photos / name)), cv2.COLOR_BGR2RGB) for name in args.photos] * args.repeat
    if args.stages_only:
        from types import SimpleNamespace

        # AnonymizeParams' defaults, without pydantic.
        params = SimpleNamespace(
            tex_size=args.tex_size,
            img_size=args.img_size,
            remove_mouth=True,
            margin_px=6.0,
            feather_px=1.5,
            alpha=1.0,
            keep_pose=True,
            texture_blur=0.02,
            margin=0.95,
            alpha_thresh=0.5,
            max_num_faces=20,
        )
    else:
        from serve_app.pipelines.anonymize import AnonymizeParams

        params = AnonymizeParams(tex_size=args.tex_size, img_size=args.img_size)
    bfm = MorphableModel.load(resolve("tddfa-bfm-assembled"))
    description = bfm.description
    saved = None
    if args.detections and Path(args.detections).exists():
        saved = json.loads(Path(args.detections).read_text())
    detector = None if saved else RetinaFace(RetinaFaceConfig(model_path=str(resolve(args.retinaface))))
    tddfa = TDDFA(
        TDDFAConfig(weights_path=str(resolve(args.tddfa)), param_stats_path=str(resolve("tddfa-param-mean-std"))),
        Placement(device=args.device),
    )
    backends = ["torch"] + (["pytorch3d"] if pytorch3d_available() else [])
    renderers = {b: MeshRenderer(MeshRendererConfig(backend=b), Placement(device=args.device)) for b in backends}
    print(
        f"{len(images)} photos, tex_size {args.tex_size}, img_size {args.img_size}; {description[:40]}...; "
        f"TDDFA and renderer on {args.device}; load average {os.getloadavg()[0]:.1f}"
    )

    def detect(k: int, image):
        if saved:
            return [
                FaceLandmarks(
                    box=np.array(f["box"], np.float32),
                    score=f["score"],
                    points=np.array(f["points"], np.float32),
                    scheme=FIVE_POINT,
                )
                for f in saved[k % len(saved)]
            ]
        small, scale = detector_input(image)
        return [f.scaled(1 / scale) for f in detector.predict([small])[0]][: params.max_num_faces]

    # Warm-up: first calls build lazy state (ONNX session, torch kernels, PyTorch3D).
    tddfa.predict([crops_for_boxes(images[0], [detect(0, images[0])[0].box])[0]])

    clock = Clock()
    faces_total = 0
    requests: list[RenderRequest] = []
    detections = []
    for k, image in enumerate(images):
        height, width = image.shape[:2]
        with clock("detect"):
            found = detect(k, image)
        detections.append(
            [{"box": f.box.tolist(), "score": float(f.score), "points": f.points.tolist()} for f in found]
        )
        if not found:
            continue
        faces_total += len(found)
        with clock("TDDFA"):
            crops, rois = crops_for_boxes(image, [f.box for f in found])
            all_params = tddfa.predict([crops])[0]
        with clock("reconstruct+segment"):
            faces = [face3d.reconstruct(bfm, p, r, d, (height, width)) for p, r, d in zip(all_params, rois, found)]
            cut = face3d.cutout_alpha((height, width), faces, params.remove_mouth, params.margin_px, params.feather_px)
            inpainted = face3d.segment(image, cut)[1]
        for face in faces:
            with clock("morph+bake"):
                vertices, model_vertices, texture = face3d.anonymised_mesh(face, bfm, inpainted, cut, params)
            requests += face3d.render_requests(bfm, vertices, model_vertices, texture, params, True, (height, width))[0]
    if saved:
        del clock.seconds["detect"]  # read from the file: nothing measured
    stages = list(clock.seconds)
    end_to_end_too = not (args.stages_only or saved)
    if args.detections and not saved:
        Path(args.detections).parent.mkdir(parents=True, exist_ok=True)
        Path(args.detections).write_text(json.dumps(detections))

    step = args.render_batch
    for backend, renderer in renderers.items():
        renderer.predict(requests[:3])  # warm-up
        with clock(f"render {backend} batched x{step}"):
            for i in range(0, len(requests), step):
                renderer.predict(requests[i : i + step])
        with clock(f"render {backend} unbatched"):
            for request in requests:
                renderer.predict([request])

    async def end_to_end(models: dict) -> int:
        gate = asyncio.Semaphore(args.concurrency)

        async def one(image):
            async with gate:
                return len((await anonymize(image, params, bfm, **models)).faces)

        return sum(await asyncio.gather(*(one(im) for im in images)))

    for backend in backends if end_to_end_too else []:
        from deployments.serving import LocalBatcher
        from serve_app.pipelines.anonymize import anonymize

        models = dict(
            detect=LocalBatcher(detector),
            reconstruct=LocalBatcher(tddfa),
            render=LocalBatcher(renderers[backend], max_batch_size=step),
        )
        with clock(f"end to end ({backend} renderer)"):
            count = asyncio.run(end_to_end(models))
        assert count == faces_total, (count, faces_total)

    rates = {stage: faces_total / s for stage, s in clock.seconds.items()}
    print(
        f"\n== faces per second, {faces_total} faces (in-process, this box; load average "
        f"{os.getloadavg()[0]:.1f} at the end)"
    )
    for name, rate in rates.items():
        print(f"  {name:40s} {rate:8.2f} faces/s")
    ratios = []
    for backend in backends:
        ratios.append((f"render {backend} batched x{step}", f"render {backend} unbatched"))
    if len(backends) == 2:
        ratios += [
            (f"render torch batched x{step}", f"render pytorch3d batched x{step}"),
            ("render torch unbatched", "render pytorch3d unbatched"),
            *([("end to end (torch renderer)", "end to end (pytorch3d renderer)")] if end_to_end_too else []),
        ]
    for a, b in ratios:
        print(f"  ratio {a} / {b}: {rates[a] / rates[b]:.2f}")
    per_face = {stage: 1 / rates[stage] for stage in stages}  # seconds per face
    for backend in backends:
        parts = {**per_face, "render": 1 / rates[f"render {backend} batched x{step}"]}
        total = sum(parts.values())
        shares = ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items())
        print(f"  stages with the {backend} renderer (batched): {total * 1000:.0f} ms/face; {shares}")
