"""Crops on real faces through the real recogniser: a `buffalo` crop is the extraction
pipeline's aligned crop (same embedding), at 224 too, also for a face that was meshed
after it was detected (its detector points are kept for alignment)."""

import numpy as np
import pytest

from deployments.arcface.model import ArcFace, ArcFaceConfig
from deployments.facemesh.model import FaceMesh, FaceMeshConfig
from deployments.geometry import iou
from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.types import MESH_478, FaceLandmarks
from serve_app.faces.align import aligned_crops
from serve_app.faces.crops import buffalo_crop
from serve_app.imaging import decode_image

PHOTOS = (
    "insightface_t1.jpg",
    "3ddfa_trump_hillary.jpg",
    "facedet1mb_nine_kids.jpg",
    "lfw_Rob_Lowe_0001.jpg",
    "lfw_Nathalie_Baye_0002.jpg",
    "ultralight_handshake_13.jpg",
)


@pytest.fixture(scope="module")
def arcface(asset):
    return ArcFace(ArcFaceConfig(model_path=str(asset("arcface-mobilefacenet-128d"))))


@pytest.fixture(scope="module")
def faces(asset, photos_dir):
    """(image, detected face, the same face meshed, or None) for the faces of a few photos;
    the meshed face is built as the locate step builds it: mesh points, detector `five`."""
    detector = RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))
    mesh = FaceMesh(FaceMeshConfig(max_num_faces=5))
    out = []
    for name in PHOTOS:
        image = decode_image((photos_dir / name).read_bytes())
        meshes = mesh.predict([image])[0]
        for face in detector.predict([image])[0]:
            match = max(meshes, key=lambda m: iou(m.box, face.box), default=None)
            meshed = None
            if match is not None and iou(match.box, face.box) > 0.3:
                meshed = FaceLandmarks(
                    box=face.box,
                    score=face.score,
                    points=match.points,
                    scheme=MESH_478,
                    pose=match.pose,
                    five=face.points,
                )
            out.append((image, face, meshed))
    mesh.close()
    assert len(out) >= 15 and sum(m is not None for _, _, m in out) >= 10
    return out


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_buffalo_crops_embed_like_the_extraction_pipelines(faces, arcface):
    worst = {"112": 1.0, "224": 1.0, "meshed": 1.0}
    for image, face, meshed in faces:
        pipeline_crop = aligned_crops(image, face.five_points(), (112,))[0]  # what face_extract embeds
        crops = [pipeline_crop, buffalo_crop(image, face), buffalo_crop(image, face, 224)]
        if meshed is not None:
            crops.append(buffalo_crop(image, meshed))
        ref, *others = arcface.predict(crops)
        for key, emb in zip(("112", "224", "meshed"), others):
            worst[key] = min(worst[key], cosine(ref, emb))
    print({k: round(v, 4) for k, v in worst.items()})
    assert worst["112"] >= 0.9999 and worst["meshed"] >= 0.9999  # the same crop
    assert worst["224"] >= 0.99  # the template scaled to 224, resized back to 112 by the recogniser
