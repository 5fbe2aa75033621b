"""Application `anonymize`: POST /v1/anonymize (3D face anonymisation of every face of
a photo), GET /v1/anonymize/health and /ready.

Graph: AnonymizeIngress -> RetinaFace, TDDFA, MeshRenderer (model-tier deployments);
the morphable model (plain numpy) and the geometry between the models run in the
ingress, off its event loop.
"""

# No `from __future__ import annotations` here: FastAPI and Serve read the real
# annotations (the form model, the builder's args).

import asyncio
import io
import zipfile

import numpy as np
from fastapi import Request
from pydantic import BaseModel, Field
from ray import serve

from deployments.mesh_renderer.mesh_io import obj_files
from serve_app import display
from serve_app.apps import ingress
from serve_app.config.model_tier import MORPHABLE_MODEL, morphable_model
from serve_app.config.spec import from_form
from serve_app.imaging import b64, encode_png
from serve_app.pipelines.anonymize import SPEC, AnonymizeParams, AnonymizeResult, anonymize
from serve_app.web.http import create_app, request_id
from serve_app.web.schemas import AnonymizedFaceOut, AnonymizeResponse, PoseOut

OUTPUTS = ("anonymized", "segmented", "renders", "mesh")

AnonymizeForm = ingress.upload_form(AnonymizeParams, OUTPUTS, "anonymized,segmented,renders")
app, endpoint_metrics = create_app(SPEC.name, "FaceGraph: 3D face anonymisation")
calls = ingress.ModelCalls(SPEC.models)
models = calls.calls()  # the pipeline's model arguments: handles looked up on first use
model_state = {"MorphableModel": "not loaded"}
ingress.add_health_routes(app, lambda: calls, lambda: model_state)


def mesh_zip(name: str, face, triangles, uvs) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file_name, data in obj_files(name, face.model_vertices, triangles, uvs, face.texture).items():
            archive.writestr(file_name, data)
    return buffer.getvalue()


def build_response(
    result: AnonymizeResult, wanted: frozenset[str], rid: str, bfm, description: str
) -> AnonymizeResponse:
    faces = []
    for i, anon in enumerate(result.faces):
        marks, pose = anon.face.landmarks, anon.face.pose
        faces.append(
            AnonymizedFaceOut(
                face_index=i,
                box=display.box(marks.box),
                score=display.score(marks.score),
                landmarks=display.points(marks.points),
                pose=PoseOut(yaw=round(pose.yaw, 1), pitch=round(pose.pitch, 1), roll=round(pose.roll, 1)),
                render_png_base64=b64(encode_png(anon.frontal)) if anon.frontal is not None else None,
                mesh_zip_base64=b64(mesh_zip(f"face{i}", anon, bfm.tri, bfm.uv)) if "mesh" in wanted else None,
            )
        )
    return AnonymizeResponse(
        request_id=rid,
        width=result.width,
        height=result.height,
        morphable_model=description,
        faces=faces,
        anonymized_png_base64=b64(encode_png(result.anonymized)) if "anonymized" in wanted else None,
        segmented_png_base64=b64(encode_png(result.segmented)) if "segmented" in wanted else None,
    )


async def handle(
    rgb: np.ndarray, params: AnonymizeParams, wanted: frozenset[str], models: dict, bfm, description: str, rid: str
) -> AnonymizeResponse:
    """POST /v1/anonymize's work without HTTP (the ingress, the tests and the benchmark
    call it): a decoded image in, the response out; `bfm` the morphable model."""
    result = await anonymize(rgb, params, bfm, frontal="renders" in wanted, **models)
    endpoint_metrics.faces(len(result.faces))
    return await asyncio.to_thread(build_response, result, wanted, rid, bfm, description)


@serve.deployment(ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=16)
@serve.ingress(app)
class AnonymizeIngress:
    def __init__(self, morphable_model_asset: str):
        self.bfm, self.description = morphable_model(morphable_model_asset)
        model_state["MorphableModel"] = self.description

    @app.post("/", response_model=AnonymizeResponse, responses=ingress.MASK_ERRORS)
    async def anonymize(self, request: Request, form: AnonymizeForm, image: ingress.ImageUpload) -> AnonymizeResponse:
        wanted = ingress.parse_outputs(form.outputs, OUTPUTS)
        params = from_form(AnonymizeParams, form)
        rgb = await ingress.decoded_upload(image)
        work = handle(rgb, params, wanted, models, self.bfm, self.description, request_id(request))
        return await ingress.within_request_timeout(work, "the anonymisation")


class AnonymizeArgs(BaseModel):
    """Builder arguments (serve_config.yaml `args`). The models' weights are configured
    in the `models` application; the morphable model (not a deployment) here."""

    morphable_model_asset: str = Field(MORPHABLE_MODEL, description="the morphable model by manifest name")


def build(args: AnonymizeArgs) -> serve.Application:
    morphable_model(args.morphable_model_asset)  # a missing file fails at deploy, with the fetch command
    return AnonymizeIngress.bind(args.morphable_model_asset)
