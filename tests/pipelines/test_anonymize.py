"""The anonymisation pipeline in-process: RetinaFace (det_500m), TDDFA (mb05) and
MeshRenderer (plain-torch backend, what "auto" picks on a CPU) behind LocalBatcher, with the assembled morphable model.

The issue's evidence, measured here and printed (run with -s to see it):
- the 68 landmarks against an independent model (MediaPipe FaceMesh) on the shared photos;
- the identity change: ArcFace (MobileFaceNet, 128-d) cosine between each original face and
  the same face in the anonymised photo, against the same-person level (the LFW Rob Lowe pair);
- the background (outside every face's render region) byte-identical;
plus no face, remove_mouth and the per-face outputs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.arcface.model import ArcFace, ArcFaceConfig
from deployments.facemesh.model import FaceMesh, FaceMeshConfig
from deployments.geometry import iou
from deployments.mesh_renderer.model import MeshRenderer, MeshRendererConfig
from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.serving import LocalBatcher
from deployments.tddfa.bfm import MorphableModel, to_image
from deployments.tddfa.crops import crops_for_boxes
from deployments.tddfa.model import TDDFA, TDDFAConfig
from deployments.types import IBUG_68
from serve_app.faces import face3d
from serve_app.faces.align import aligned_crops
from serve_app.pipelines.anonymize import SPEC, AnonymizeParams, anonymize
from serve_app.pipelines.locate import locate_faces
from tests.helpers import FRONTAL_PHOTOS

SMALL = dict(tex_size=256, img_size=128)  # request sizes that keep the tests fast
ONE_FACE, SAME_PERSON = "lfw_Rob_Lowe_0001.jpg", "lfw_Rob_Lowe_0002.jpg"
TWO_FACES = "3ddfa_trump_hillary.jpg"
NO_FACE = "inspireface_view_noface.jpg"

# iBUG-68 index (0-based) -> MediaPipe face-mesh ids, the mean when two: a subset of the
# correspondence in PeizhiYan/Mediapipe_2_Dlib_Landmarks (mediapipe2dlib/mp2dlib.py):
# eye corners, nose tip, mouth corners, chin and four jaw points.
IBUG_TO_MESH = {
    36: (33,),
    39: (133,),
    42: (362,),
    45: (263,),  # eye corners
    30: (4,),  # nose tip
    48: (61,),
    54: (291,),  # mouth corners
    8: (152,),  # chin
    4: (58, 172),
    6: (150,),
    10: (379,),
    12: (397, 288),  # jaw
}
# The aim, NME <= 0.08, applies to the near-frontal photos.
FRONTAL = list(FRONTAL_PHOTOS)
# Measured, not asserted: a masked face (FaceMesh guesses the covered half), profiles
# (yaw -66 to -83 degrees) and a dog (no human face at all).
OTHERS = ["inspireface_mask2_masked.jpg", "ultralight_audience_profiles_24.jpg", "dlib_dogs_noface.jpg"]
# The identity check runs the whole pipeline: one face per person, 8 faces.
IDENTITY = [
    "lfw_Rob_Lowe_0001.jpg",
    "lfw_Nathalie_Baye_0002.jpg",
    "3ddfa_JianzhuGuo.jpg",
    "3ddfa_trump_hillary.jpg",
    "ultralight_handshake_13.jpg",
    "inspireface_woman_search.jpeg",
]


@pytest.fixture(scope="module")
def bfm(asset) -> MorphableModel:
    return MorphableModel.load(asset("tddfa-bfm-assembled"))


@pytest.fixture(scope="module")
def models(asset):
    """(detect, reconstruct, render) as the pipeline takes them."""
    tddfa = TDDFA(
        TDDFAConfig(weights_path=str(asset("tddfa-mb05-120")), param_stats_path=str(asset("tddfa-param-mean-std")))
    )
    detector = RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))
    renderer = MeshRenderer(MeshRendererConfig(backend="torch"))
    return {"detect": LocalBatcher(detector), "reconstruct": LocalBatcher(tddfa), "render": LocalBatcher(renderer)}


@pytest.fixture(scope="module")
def run(bfm, models, load_photo):
    """run(name, frontal=False, **params) -> AnonymizeResult, cached per (photo, params):
    most checks share the runs of the identity check (no frontal renders asked for)."""
    cache = {}

    def _run(name: str, frontal: bool = False, **params):
        key = (name, frontal, tuple(sorted(params.items())))
        if key not in cache:
            work = anonymize(load_photo(name), AnonymizeParams(**{**SMALL, **params}), bfm, frontal=frontal, **models)
            cache[key] = asyncio.run(work)
        return cache[key]

    return _run


def test_spec_names_the_models_it_calls():
    assert SPEC.name == "anonymize" and SPEC.params is AnonymizeParams
    assert SPEC.models == {"detect": "RetinaFace", "reconstruct": "TDDFA", "render": "MeshRenderer"}


# ---- evidence: the landmarks against FaceMesh ---------------------------------------------


def landmark_errors(image, located, tddfa, bfm) -> list[float]:
    """Per meshed face: mean distance of the 68 landmarks' subset to FaceMesh's points,
    divided by FaceMesh's outer-eye-corner distance."""
    faces = [f for f in located if f.meshed]
    if not faces:
        return []
    crops, rois = crops_for_boxes(image, [f.box for f in faces])
    errors = []
    for face, params, roi in zip(faces, tddfa.predict([crops])[0], rois):
        ours = to_image(bfm.landmarks(params), roi)[list(IBUG_TO_MESH), :2]  # what face3d.reconstruct returns
        mesh = face.points[:, :2]
        theirs = np.stack([mesh[list(ids)].mean(0) for ids in IBUG_TO_MESH.values()])
        inter_ocular = np.linalg.norm(mesh[33] - mesh[263])
        errors.append(float(np.linalg.norm(ours - theirs, axis=1).mean() / inter_ocular))
    return errors


def test_68_landmarks_agree_with_facemesh(models, bfm, load_photo):
    tddfa = models["reconstruct"].model
    mesh_model = FaceMesh(FaceMeshConfig())
    mesh = LocalBatcher(mesh_model)
    per_photo = {}
    try:
        for name in FRONTAL + OTHERS:
            image = load_photo(name)
            located = asyncio.run(locate_faces(image, models["detect"], mesh))
            per_photo[name] = landmark_errors(image, located, tddfa, bfm)
    finally:
        mesh_model.close()
    print("\nNME (68 landmarks vs FaceMesh, / inter-ocular), per photo: mean [per face]")
    for name, errors in per_photo.items():
        print(f"  {name:40s} {np.mean(errors):.4f} {np.round(errors, 3).tolist()}")
    frontal = [e for n in FRONTAL for e in per_photo[n]]
    print(f"  near-frontal faces: {len(frontal)}, mean {np.mean(frontal):.4f}, max {np.max(frontal):.4f}")
    assert len(frontal) >= 17
    for name in FRONTAL:
        assert per_photo[name] and np.mean(per_photo[name]) <= 0.08, (name, per_photo[name])
    assert np.max(frontal) <= 0.12


def test_pipeline_landmarks_are_the_reconstructed_ones(run, models, bfm, load_photo):
    """The pipeline's 68 landmarks are those the check above measured (same crops, same model)."""
    image = load_photo(TWO_FACES)
    result = run(TWO_FACES)
    assert len(result.faces) == 2
    for anon in result.faces:
        face = anon.face
        assert face.landmarks.scheme == IBUG_68 and face.landmarks.points.shape == (68, 3)
        np.testing.assert_allclose(face.landmarks.points, to_image(bfm.landmarks(face.params), face.roi_box), atol=1e-3)
        crops, rois = crops_for_boxes(image, [face.landmarks.box])
        np.testing.assert_allclose(face.roi_box, rois[0])
        alone = models["reconstruct"].model.predict([crops])[0][0]  # batched with the other face before
        np.testing.assert_allclose(face.params, alone, rtol=1e-5, atol=1e-6)
        assert face.landmarks.five is not None and face.landmarks.five.shape == (5, 2)


# ---- evidence: identity -------------------------------------------------------------------


@pytest.fixture(scope="module")
def embed(asset):
    arcface = ArcFace(ArcFaceConfig(model_path=str(asset("arcface-mobilefacenet-128d"))))
    return lambda image, five: arcface.predict([aligned_crops(image, five, (112,))[0]])[0]


def test_anonymisation_changes_identity(run, models, load_photo, embed):
    detector = models["detect"].model
    # The same-person level: one person, two photos (the extraction pipeline's check).
    a, b = (detector.predict([load_photo(n)])[0][0] for n in (ONE_FACE, SAME_PERSON))
    same_person = float(embed(load_photo(ONE_FACE), a.points) @ embed(load_photo(SAME_PERSON), b.points))
    cosines = {}
    for name in IDENTITY:
        image, result = load_photo(name), run(name)
        # The anonymised faces as the recogniser would find them: detected again.
        again = detector.predict([result.anonymized])[0]
        for i, anon in enumerate(result.faces):
            original = anon.face.landmarks
            match = max(again, key=lambda f: iou(f.box, original.box), default=None)
            assert match is not None and iou(match.box, original.box) > 0.5, (name, i)
            cosines[f"{name}#{i}"] = float(embed(image, original.five) @ embed(result.anonymized, match.points))
    values = np.array(list(cosines.values()))
    print(f"\nsame-person level (ArcFace cosine, {ONE_FACE} vs {SAME_PERSON}): {same_person:.3f}")
    print("original vs anonymised face, ArcFace cosine:")
    for key, value in cosines.items():
        print(f"  {key:40s} {value:.3f}")
    print(
        f"  {len(values)} faces: min {values.min():.3f} median {np.median(values):.3f} mean {values.mean():.3f} "
        f"max {values.max():.3f}"
    )
    assert same_person > 0.6 and len(values) == 8
    # The issue: well below the same-person level. Every face: a face the recogniser still
    # matches to itself as well as to the same person in another photo is not anonymised.
    # (Measured: mean 0.13, max 0.29 against 0.75; with the photo's texture unblurred,
    # texture_blur=0, mean 0.35 and max 0.77; with the photo's own eyes and mouth shown
    # through the cut-out as well, mean 0.92.)
    assert values.max() < same_person, f"max {values.max():.3f} >= same-person level {same_person:.3f}"
    assert values.mean() < same_person / 2, f"mean {values.mean():.3f}: not well below {same_person:.3f}"


# ---- the photo around the faces -----------------------------------------------------------


def test_background_is_byte_identical_and_every_face_is_replaced(run, load_photo):
    for name in (TWO_FACES, "ultralight_handshake_13.jpg"):
        image, result = load_photo(name), run(name)
        height, width = image.shape[:2]
        assert result.anonymized.shape == image.shape and result.anonymized.dtype == np.uint8
        regions = np.zeros((height, width), bool)
        for anon in result.faces:
            x0, y0, x1, y1 = face3d.region_of(anon.vertices, width, height)
            regions[y0:y1, x0:x1] = True
            # Inside the face, the picture changed (the re-rendered face).
            x, y = np.round(anon.face.landmarks.points[30, :2]).astype(int)  # nose tip
            assert np.any(result.anonymized[y - 5 : y + 6, x - 5 : x + 6] != image[y - 5 : y + 6, x - 5 : x + 6])
        assert regions.mean() < 0.5
        np.testing.assert_array_equal(result.anonymized[~regions], image[~regions])
        # The segmented photo: the photo itself wherever nothing was cut out.
        kept = result.segmented[..., 3] == 255
        np.testing.assert_array_equal(result.segmented[..., :3][kept], image[kept])


def test_no_face_leaves_the_image_unchanged(run, load_photo):
    image, result = load_photo(NO_FACE), run(NO_FACE)
    assert result.faces == [] and (result.width, result.height) == (image.shape[1], image.shape[0])
    np.testing.assert_array_equal(result.anonymized, image)
    assert result.segmented.shape == image.shape[:2] + (4,) and np.all(result.segmented[..., 3] == 255)
    np.testing.assert_array_equal(result.segmented[..., :3], image)


def test_remove_mouth_decides_whether_the_mouth_is_cut_out(run):
    with_mouth, without_mouth = run(ONE_FACE, remove_mouth=False), run(ONE_FACE)
    for result, mouth_alpha in ((with_mouth, 255), (without_mouth, 0)):
        points = result.faces[0].face.landmarks.points
        for region, want in ((face3d.MOUTH, mouth_alpha), (face3d.RIGHT_EYE, 0), (face3d.LEFT_EYE, 0)):
            x, y = np.round(points[list(region), :2].mean(0)).astype(int)
            assert result.segmented[y, x, 3] == want, (region, want)
        assert result.segmented[2, 2, 3] == 255


def test_per_face_outputs(run, bfm):
    result = run(ONE_FACE, frontal=True)
    [anon] = result.faces
    n = bfm.num_vertices
    assert anon.vertices.shape == anon.model_vertices.shape == (n, 3)
    np.testing.assert_allclose(anon.model_vertices, bfm.mean_vertices(), atol=1e-2)  # alpha=1: the mean face
    assert anon.texture.shape == (256, 256, 4) and not np.any(np.all(anon.texture[..., :3] == 0, axis=2))
    assert anon.frontal.shape == (128, 128, 4) and anon.frontal.dtype == np.uint8
    alpha = anon.frontal[..., 3]
    assert 0.2 < (alpha == 255).mean() < 0.9  # a face in the frame, background transparent
    # The eyes are cut out of the frontal render too: holes inside the face.
    import cv2

    filled = np.zeros_like(alpha)
    contours, _ = cv2.findContours((alpha > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(filled, contours, -1, 255, -1)
    assert ((filled > 0) & (alpha == 0)).sum() > 20
    pose = anon.face.pose
    assert abs(pose.yaw) < 20 and abs(pose.pitch) < 30 and abs(pose.roll) < 15
    # Without renders asked for, no frontal render is made.
    assert all(a.frontal is None for a in run(ONE_FACE).faces)


@pytest.mark.parametrize(
    "bad",
    [
        dict(alpha=1.5),
        dict(tex_size=128),
        dict(tex_size=8192),
        dict(margin=0),
        dict(alpha_thresh=1.0),
        dict(max_num_faces=0),
        dict(unknown=1),
    ],
)
def test_bad_params_are_refused(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        AnonymizeParams(**bad)
