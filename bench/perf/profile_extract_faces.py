"""Where one POST /extract-faces request spends its time: every step the request goes
through, timed on its own (perf_counter spans, median of --reps), then the same request
served end to end, so what the steps do not explain (proxy, ASGI, handle hops,
queueing) is measured too.

  in-process spans  body JSON parse + validation, base64 decode, image decode,
                    letterbox, RetinaFace predict, alignment, headshot JPEG, ArcFace
                    predict, de-duplication, response building, response JSON
                    (FastAPI's own path: validate + pydantic dump_json);
  served            client latency at 1 client, the ingress's own processing_time_ms,
                    GET /health through the proxy (the proxy + ASGI floor), each
                    model's handle round trip from a driver (predict + batch wait +
                    transfer) and the latency at --clients clients (queueing).

Models run with one thread each, as their replicas do (num_cpus < 1 -> one thread).

    python -m bench profile_extract_faces [--image facedet1mb_nine_kids.jpg] [--reps 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from bench.harness.cluster import delete_apps, deploy_model_tier, shutdown, start_ray, start_serve
from bench.harness.endpoints import build_model, extract_faces_body

DETECTOR, RECOGNISER = "retinaface-det-500m", "arcface-mobilefacenet-128d"


def timed(fn, reps: int) -> tuple[float, object]:
    """(median ms of `reps` calls, the last result)."""
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), out


def request_body(data: bytes) -> bytes:
    return json.dumps(extract_faces_body([data], min_face_size=0)).encode()


def spans(data: bytes, reps: int) -> tuple[dict[str, float], int, int]:
    """-> ({step: median ms}, faces, response bytes), in-process, one thread per model."""
    from fastapi.encoders import jsonable_encoder
    from pydantic import TypeAdapter

    from serve_app.apps.face_extract import build_response
    from serve_app.faces.align import aligned_crops
    from serve_app.faces.dedup import deduplicate
    from serve_app.imaging import decode_base64, decode_image, encode_jpeg
    from serve_app.pipelines.face_extract import EMBED_SIZE, HEADSHOT_QUALITY, HEADSHOT_SIZE, Extraction, Face
    from serve_app.pipelines.locate import detector_input
    from serve_app.web.schemas import ExtractFacesRequest, ExtractFacesResponse

    detector, recogniser = build_model("RetinaFace", DETECTOR, threads=1), build_model("ArcFace", RECOGNISER, threads=1)
    body = request_body(data)
    out: dict[str, float] = {}
    out["ingress: body JSON parse + validation"], req = timed(
        lambda: ExtractFacesRequest.model_validate(json.loads(body)), reps
    )
    text = req.images[0].image_base64
    out["ingress: base64 decode"], raw = timed(lambda: decode_base64(text), reps)
    out["ingress: image decode (PIL)"], image = timed(lambda: decode_image(raw), reps)
    out["ingress: letterbox to 640"], (small, scale) = timed(lambda: detector_input(image), reps)
    detector.predict([small])
    out["model: RetinaFace predict (1 thread)"], (found,) = timed(lambda: detector.predict([small]), reps)
    faces = [f.scaled(1 / scale) for f in found]
    out["ingress: alignment (112 + 160 warps)"], crops = timed(
        lambda: [aligned_crops(image, f.five_points(), (EMBED_SIZE, HEADSHOT_SIZE)) for f in faces], reps
    )
    out["ingress: headshot JPEG"], jpegs = timed(lambda: [encode_jpeg(h, HEADSHOT_QUALITY) for _, h in crops], reps)
    stack = np.stack([c for c, _ in crops])
    recogniser.predict([stack])
    out["model: ArcFace predict (1 thread, all faces)"], (embeddings,) = timed(
        lambda: recogniser.predict([stack]), reps
    )
    result_faces = [
        Face(str(i), 0, i, f.box, f.points, f.score, np.asarray(e, np.float32), j)
        for i, (f, e, j) in enumerate(zip(faces, embeddings, jpegs))
    ]
    emb = np.stack([f.embedding for f in result_faces])
    out["ingress: de-duplication"], dedup = timed(
        lambda: deduplicate(emb, 0.3, groups=np.zeros(len(emb), int), eligible=np.ones(len(emb), bool)), reps
    )
    extraction = Extraction(result_faces, dedup, 0.3, np.zeros(len(result_faces), bool), [], 1)
    out["ingress: build response model"], response = timed(
        lambda: build_response(extraction, "rid", time.perf_counter()), reps
    )
    adapter = TypeAdapter(ExtractFacesResponse)
    # FastAPI 0.165's path for a response_model: validate, then pydantic's dump_json.
    out["ingress: response JSON (validate + dump_json)"], payload = timed(
        lambda: adapter.dump_json(adapter.validate_python(response)), reps
    )
    out["  (for comparison: jsonable_encoder + json.dumps)"], _ = timed(
        lambda: json.dumps(jsonable_encoder(response)).encode(), reps
    )
    return out, len(faces), len(payload)


def served(data: bytes, reps: int, clients: int) -> dict[str, float]:
    """End-to-end numbers on a local Serve graph with one replica per model."""
    import httpx
    from ray import serve

    from deployments.arcface.model import ArcFace, ArcFaceConfig
    from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
    from deployments.serving import model_deployment
    from serve_app.apps.face_extract import FaceExtractArgs, build
    from serve_app.config.assets import resolve
    from serve_app.config.model_tier import MODEL_APP
    from serve_app.imaging import decode_image
    from serve_app.pipelines.face_extract import EMBED_SIZE, SPEC
    from serve_app.pipelines.locate import detector_input

    start_ray()
    base = start_serve()
    out: dict[str, float] = {}
    try:

        def deployment(model, config, asset):
            batch = {"max_batch_size": 8, "batch_wait_timeout_s": 0.005}
            return model_deployment(model, config, asset, ray_actor_options={"num_cpus": 0.5}, user_config=batch)

        deploy_model_tier(
            {
                "RetinaFace": deployment(RetinaFace, RetinaFaceConfig(model_path=str(resolve(DETECTOR))), DETECTOR),
                "ArcFace": deployment(ArcFace, ArcFaceConfig(model_path=str(resolve(RECOGNISER))), RECOGNISER),
            }
        )
        serve.run(build(FaceExtractArgs()), name=SPEC.name, route_prefix="/")
        body = request_body(data)
        headers = {"content-type": "application/json"}
        with httpx.Client(timeout=120) as client:

            def post():
                r = client.post(base + "/extract-faces", content=body, headers=headers)
                r.raise_for_status()
                return r

            post()
            latencies, inside = [], []
            for _ in range(reps):
                start = time.perf_counter()
                r = post()
                latencies.append((time.perf_counter() - start) * 1000)
                inside.append(r.json()["processing_time_ms"])
            out["served: client latency, 1 client"] = statistics.median(latencies)
            out["served: ingress handler (processing_time_ms)"] = statistics.median(inside)
            out["served: GET /health through the proxy"], _ = timed(
                lambda: client.get(base + "/health").raise_for_status(), reps
            )
            from concurrent.futures import ThreadPoolExecutor

            def timed_post(_):
                start = time.perf_counter()
                post()
                return (time.perf_counter() - start) * 1000

            with ThreadPoolExecutor(clients) as pool:
                many = list(pool.map(timed_post, range(reps * clients)))
            out[f"served: client latency, {clients} clients (p50)"] = statistics.median(many)
        image = decode_image(data)
        small, _ = detector_input(image)
        det = serve.get_deployment_handle("RetinaFace", app_name=MODEL_APP)
        emb = serve.get_deployment_handle("ArcFace", app_name=MODEL_APP)
        found = det.remote(small).result()
        stack = np.zeros((max(1, len(found)), EMBED_SIZE, EMBED_SIZE, 3), np.uint8)
        emb.remote(stack).result()
        out["served: RetinaFace handle round trip"], _ = timed(lambda: det.remote(small).result(), reps)
        out["served: ArcFace handle round trip"], _ = timed(lambda: emb.remote(stack).result(), reps)
        delete_apps(SPEC.name, MODEL_APP)
    finally:
        shutdown()
    return out


def main(argv: list[str] | None = None) -> None:
    from serve_app.config.assets import resolve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="facedet1mb_nine_kids.jpg", help="a file of test-images-photos")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args(argv)
    data = (resolve("test-images-photos") / args.image).read_bytes()
    steps, faces, size = spans(data, args.reps)
    print(
        f"\n== one /extract-faces request: {args.image} ({len(data)} bytes, {faces} faces, "
        f"response {size} bytes); median of {args.reps}"
    )
    for name, ms in steps.items():
        print(f"  {name:52s} {ms:8.2f} ms")
    ingress = sum(ms for name, ms in steps.items() if name.startswith("ingress:"))
    models = sum(ms for name, ms in steps.items() if name.startswith("model:"))
    print(f"  {'sum of ingress steps':52s} {ingress:8.2f} ms\n  {'sum of model steps':52s} {models:8.2f} ms")
    for name, ms in served(data, args.reps, args.clients).items():
        print(f"  {name:52s} {ms:8.2f} ms")
