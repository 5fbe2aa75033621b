"""Every endpoint, two ways, for the benchmarks: an HTTP request to the served graph,
and the same work in this process (decode, then the app's own handle(...): the
pipeline with the models behind LocalBatcher, and the response) without HTTP, Serve
or Ray. Each
endpoint is measured at its intended use: /extract-faces with PHOTOS_PER_REQUEST photos
in a request (a client sends its photos together), the others with one image, as a
client calls them.

The in-process side is what the ingress does minus the transport: the same handler the
ingress calls, the same model classes and configs (from the serve config's `models`
block, as the batch jobs build them), so HTTP / in-process is the cost of serving.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.load import Request

SUFFIXES = (".jpg", ".jpeg", ".png")
# Photos with the most faces (the 100-face selfie, the audience) make one request of
# the 3D and mask endpoints take tens of seconds on 2 cores; they stay in extract-faces.
CROWDS = ("facedet1mb_worlds_largest_selfie.jpg", "ultralight_audience_profiles_24.jpg")
PHOTOS_PER_REQUEST = 4  # /extract-faces's intended use: a client's photos in one request


def images_in(folder: Path) -> list[Path]:
    """The images of a folder (by suffix), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in SUFFIXES)


def build_model(name: str, asset: str | None = None, threads: int | None = None, config: dict | None = None):
    """A model of the tier built in this process as a replica builds it (class and
    config from serve_app/config/model_tier.py), with `asset` as its weights and
    `threads` threads (default every core)."""
    from deployments.types import Placement
    from serve_app.config.model_tier import ModelArgs, model_config

    cls, cfg, _ = model_config(name, ModelArgs(asset=asset, config=config or {}))
    return cls(cfg, Placement(threads=threads or os.cpu_count() or 1))


def extract_faces_body(images: list[bytes], **fields) -> dict:
    """A POST /extract-faces JSON body: the photos base64-encoded, plus `fields`."""
    return {"images": [{"image_base64": base64.b64encode(data).decode()} for data in images], **fields}


@dataclass
class Endpoint:
    name: str  # as the tables print it
    app: str  # the Serve application (serve_config.yaml)
    route: str  # POST route
    ready: str  # GET route answering 200 once its models answer
    images: str  # asset folder of inputs
    skip: tuple[str, ...] = ()
    only: tuple[str, ...] = ()  # these inputs only, when given (the slowest endpoint)
    json_body: bool = False  # extract-faces: JSON with base64 images; the others: multipart
    form: dict[str, str] = field(default_factory=dict)
    per_request: int = 1  # images in one request (JSON bodies only)

    def inputs(self) -> list[tuple[str, bytes]]:
        from serve_app.config.assets import resolve

        inputs = [(p.name, p.read_bytes()) for p in images_in(resolve(self.images)) if p.name not in self.skip]
        return [i for i in inputs if i[0] in self.only] if self.only else inputs

    def requests(self) -> list[list[tuple[str, bytes]]]:
        """The inputs each request carries: `per_request` inputs in turn, the last
        request wrapping round, so a pass over the requests is a pass over the inputs."""
        inputs, k = self.inputs(), self.per_request
        return [[inputs[(i + j) % len(inputs)] for j in range(k)] for i in range(0, len(inputs), k)]

    def payloads(self) -> list[Any]:
        """What each request sends, prepared once, outside the clock: a JSON body, or
        the (name, bytes) of a multipart upload."""
        if self.json_body:
            return [extract_faces_body([data for _, data in group], min_face_size=0) for group in self.requests()]
        return [group[0] for group in self.requests()]

    def send(self, client, base: str, payload):
        if self.json_body:
            return client.post(base + self.route, json=payload)
        name, data = payload
        return client.post(base + self.route, files={"image": (name, data)}, data=self.form)


ENDPOINTS = {
    "extract-faces": Endpoint(
        "extract-faces",
        "face_extract",
        "/extract-faces",
        "/ready",
        "test-images-photos",
        json_body=True,
        per_request=PHOTOS_PER_REQUEST,
    ),
    "face-mask": Endpoint(
        "face-mask",
        "face_mask",
        "/v1/face-mask",
        "/v1/face-mask/ready",
        "test-images-cartoon",
        form={"outputs": "mask,rgba,overlay"},
    ),
    "face-mask-sam2": Endpoint(
        "face-mask-sam2",
        "face_mask_sam2",
        "/v1/face-mask-sam2",
        "/v1/face-mask-sam2/ready",
        "test-images-photos",
        CROWDS,
        form={"outputs": "mask,rgba,overlay"},
    ),
    "mask-augment": Endpoint(
        "mask-augment",
        "mask_augment",
        "/v1/mask-augment",
        "/v1/mask-augment/ready",
        "test-images-photos",
        CROWDS,
        form={"outputs": "masked,crops", "seed": "7"},
    ),
    # Seconds of CPU per face on 2 cores (1024-texel textures, 512-pixel renders): four
    # photos with none to two faces.
    "anonymize": Endpoint(
        "anonymize",
        "anonymize",
        "/v1/anonymize",
        "/v1/anonymize/ready",
        "test-images-photos",
        only=("3ddfa_JianzhuGuo.jpg", "3ddfa_trump_hillary.jpg", "lfw_Rob_Lowe_0001.jpg", "dlib_dogs_noface.jpg"),
        form={"outputs": "anonymized,segmented,renders"},
    ),
}


class InProcess:
    """The model tier in this process: each model of the serve config built once (its
    asset and config), `threads` threads, behind a LocalBatcher capped at the
    deployment's max_batch_size; and each endpoint's work as `async fn(payload)`."""

    def __init__(self, serve_config: Path, threads: int | None = None):
        self.serve_config = serve_config
        self.threads = threads or os.cpu_count() or 1
        self._models: dict[str, Any] = {}

    def model(self, name: str):
        from deployments.serving import LocalBatcher
        from deployments.types import Placement
        from serve_app.config.model_tier import model_config, serve_config_models

        if name not in self._models:
            cls, cfg, _ = model_config(name, serve_config_models(self.serve_config).get(name))
            self._models[name] = LocalBatcher(
                cls(cfg, Placement(threads=self.threads)), max_batch_size=max_batch_size(self.serve_config, name)
            )
        return self._models[name]

    def models(self, spec) -> dict[str, Any]:
        return {key: self.model(name) for key, name in spec.models.items()}

    def close(self) -> None:
        for batcher in self._models.values():
            getattr(batcher.model, "close", lambda: None)()
        self._models.clear()

    def work(self, endpoint: str) -> Callable[[Any], Awaitable[Any]]:
        return getattr(self, "_" + endpoint.replace("-", "_"))()

    def _extract_faces(self):
        from serve_app.apps.face_extract import handle
        from serve_app.config.model_tier import calibrated_threshold, serve_config_models, served_weights
        from serve_app.imaging import decode_base64, decode_image
        from serve_app.pipelines.face_extract import SPEC, FaceExtractParams

        models = self.models(SPEC)
        arcface = SPEC.models["embed"]
        weights = served_weights(arcface, serve_config_models(self.serve_config).get(arcface))

        async def run(payload):
            params = FaceExtractParams(min_face_size=payload["min_face_size"])
            # The ingress's loader without its limits: base64 and image decode in a thread.
            loaders = [
                _loader(lambda text=e["image_base64"]: decode_image(decode_base64(text))) for e in payload["images"]
            ]
            return await handle(loaders, params.with_threshold(lambda: calibrated_threshold(weights)), models, "bench")

        return run

    def _image_handler(self, handle, params, outputs: str, **context):
        """An image endpoint's handler (serve_app/apps/<endpoint>.py handle) on the
        payload's bytes, decoded in a thread as the ingress does."""
        from serve_app.imaging import decode_image

        wanted = frozenset(outputs.split(","))

        async def run(payload):
            rgb = await asyncio.to_thread(decode_image, payload[1])
            return await handle(rgb, params, wanted, rid="bench", **context)

        return run

    def _face_mask(self):
        from serve_app.apps.face_mask import handle
        from serve_app.pipelines.face_mask import SPEC, FaceMaskParams

        form = ENDPOINTS["face-mask"].form
        return self._image_handler(handle, FaceMaskParams(), form["outputs"], models=self.models(SPEC))

    def _face_mask_sam2(self):
        from serve_app.apps.face_mask_sam2 import handle
        from serve_app.clients.sam2 import Sam2Client
        from serve_app.config.settings import Sam2Config
        from serve_app.pipelines.face_mask_sam2 import SPEC, FaceMaskSam2Params

        sam2 = Sam2Client(Sam2Config(url=""))  # as served here: no SAM2 service, polygon masks
        form = ENDPOINTS["face-mask-sam2"].form
        return self._image_handler(handle, FaceMaskSam2Params(), form["outputs"], models=self.models(SPEC), sam2=sam2)

    def _mask_augment(self):
        from serve_app.apps.mask_augment import handle
        from serve_app.pipelines.mask_augment import SPEC, MaskAugmentParams

        form = ENDPOINTS["mask-augment"].form
        params = MaskAugmentParams(seed=int(form["seed"]))
        return self._image_handler(handle, params, form["outputs"], models=self.models(SPEC))

    def _anonymize(self):
        from serve_app.apps.anonymize import handle
        from serve_app.config.model_tier import morphable_model
        from serve_app.pipelines.anonymize import SPEC, AnonymizeParams

        bfm, description = morphable_model(anonymize_asset(self.serve_config))
        outputs = ENDPOINTS["anonymize"].form["outputs"]
        return self._image_handler(
            handle, AnonymizeParams(), outputs, models=self.models(SPEC), bfm=bfm, description=description
        )


def _loader(decode):
    async def load():
        return await asyncio.to_thread(decode)

    return load


def _app_block(serve_config: Path, app: str) -> dict:
    import yaml

    doc = yaml.safe_load(Path(serve_config).read_text())
    return next(a for a in doc["applications"] if a["name"] == app)


def max_batch_size(serve_config: Path, model: str) -> int:
    from serve_app.config.model_tier import MODEL_APP

    for deployment in _app_block(serve_config, MODEL_APP).get("deployments", []):
        if deployment["name"] == model:
            return int((deployment.get("user_config") or {}).get("max_batch_size", 8))
    return 8


def anonymize_asset(serve_config: Path) -> str:
    from serve_app.config.model_tier import MORPHABLE_MODEL

    return (_app_block(serve_config, "anonymize").get("args") or {}).get("morphable_model_asset", MORPHABLE_MODEL)


# ---- pre-encoded requests for the rehearsals (load.Request) ------------------------------

# The photos the rehearsals' extract-faces requests carry, in turn.
REHEARSAL_PHOTOS = (
    "lfw_Rob_Lowe_0001.jpg",
    "lfw_Nathalie_Baye_0002.jpg",
    "insightface_t1.jpg",
    "lfw_Rob_Lowe_0002.jpg",
)


def extract_faces_request(url: str, images: int = 1) -> Request:
    """POST /extract-faces with `images` of REHEARSAL_PHOTOS (a detector call each)."""
    from serve_app.config.assets import resolve

    folder = resolve("test-images-photos")
    photos = [(folder / REHEARSAL_PHOTOS[i % len(REHEARSAL_PHOTOS)]).read_bytes() for i in range(images)]
    return Request.build("extract-faces", f"{url}/extract-faces", json=extract_faces_body(photos))


def multipart_request(kind: str, url: str, image: bytes, filename: str = "face.jpg", note=None, **form) -> Request:
    return Request.build(kind, url, note=note, files={"image": (filename, image, "image/jpeg")}, data=form)
