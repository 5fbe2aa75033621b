"""The mask-augmentation pipeline in-process: the real RetinaFace (det_500m) and FaceMesh
behind LocalBatcher (the same awaitable shape as a model-tier call). Every face of a group
photo is masked and cropped; a seed fixes the bytes; augmentations draw from generators
of their own; crop styles, no_mask, unmeshed faces, no face and parameter checks.
Placement on the face and the crops' geometry are tested in tests/unit/test_masks.py,
test_crops.py and tests/pipelines/test_masks_real_faces.py, not here."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

from deployments.facemesh.model import FaceMesh, FaceMeshConfig
from deployments.geometry import expand_box
from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.serving import LocalBatcher
from serve_app.faces.crops import CROP_STYLES, buffalo_crop, original_crop
from serve_app.faces.mask_painting import MASK_TYPES, TEXTURED, TINTABLE
from serve_app.pipelines.mask_augment import MAX_SEED, SPEC, MaskAugmentParams, mask_augment, seed_from
from tests.images import gradient_rgb

GROUPS = {"facedet1mb_nine_kids.jpg": 8, "insightface_t1.jpg": 6}
TWO_FACES = "3ddfa_trump_hillary.jpg"
ONE_FACE = "lfw_Rob_Lowe_0001.jpg"
PROFILES = "ultralight_audience_profiles_24.jpg"  # 8 faces, two of them too turned for FaceMesh
NO_FACE = "inspireface_view_noface.jpg"
NOSE_TIP, CHIN = 1, 152


@pytest.fixture(scope="module")
def models(asset):
    mesh_model = FaceMesh(FaceMeshConfig())
    yield (
        LocalBatcher(RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))),
        LocalBatcher(mesh_model),
    )
    mesh_model.close()


def run(image, models, seed=1234, **params):
    detect, mesh = models
    return asyncio.run(mask_augment(image, MaskAugmentParams(**params, seed=seed), detect=detect, mesh=mesh))


def same_bytes(a, b) -> bool:
    """Two results hold the same choices and the same bytes in every image and crop."""
    if len(a.augmentations) != len(b.augmentations):
        return False
    for x, y in zip(a.augmentations, b.augmentations):
        if x.image.tobytes() != y.image.tobytes() or len(x.faces) != len(y.faces):
            return False
        for fx, fy in zip(x.faces, y.faces):
            if (fx.mask_type, fx.mask_color, fx.texture, fx.error) != (
                fy.mask_type,
                fy.mask_color,
                fy.texture,
                fy.error,
            ):
                return False
            if fx.crops.keys() != fy.crops.keys() or any(
                fx.crops[k].tobytes() != fy.crops[k].tobytes() for k in fx.crops
            ):
                return False
    return True


def check_choice(fa) -> None:
    """A painted mask names its type, a colour only for plain masks, a texture only for cloth."""
    assert fa.mask_type in MASK_TYPES and fa.error is None
    assert (fa.mask_color is not None) == (fa.mask_type in TINTABLE)
    assert (fa.texture is not None) == (fa.mask_type in TEXTURED)
    if fa.mask_color is not None:
        assert fa.mask_color.startswith("#") and len(fa.mask_color) == 7


def test_spec_names_the_models_it_calls():
    assert SPEC.name == "mask_augment" and SPEC.params is MaskAugmentParams
    assert SPEC.models == {"detect": "RetinaFace", "mesh": "FaceMesh"}


def test_seed_from_text_is_stable_and_in_range():
    assert seed_from("req-1") == seed_from("req-1") != seed_from("req-2")
    assert all(0 <= seed_from(t) <= MAX_SEED for t in ("", "a", "nested/deeper/one.jpg"))


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_face_of_a_group_photo_gets_a_mask_and_a_crop(models, load_photo, name):
    image = load_photo(name)
    result = run(image, models)
    assert (result.width, result.height) == (image.shape[1], image.shape[0]) and result.seed == 1234
    assert len(result.faces) == GROUPS[name] and all(f.meshed for f in result.faces)
    scores = [f.score for f in result.faces]
    assert scores == sorted(scores, reverse=True)  # detector order, best first
    [aug] = result.augmentations
    assert aug.image.shape == image.shape and aug.image.dtype == np.uint8
    assert len(aug.faces) == len(result.faces)
    changed = np.any(aug.image != image, axis=2)
    near_faces = np.zeros_like(changed)
    for face, fa in zip(result.faces, aug.faces):
        check_choice(fa)
        # Painted on this face: pixels changed around its nose tip and its chin.
        for point in (NOSE_TIP, CHIN):
            x, y = np.round(face.points[point, :2]).astype(int)
            assert changed[max(0, y - 3) : y + 4, max(0, x - 3) : x + 4].any(), (name, point)
        # One buffalo crop per face, cut from the masked image.
        assert list(fa.crops) == ["buffalo"]
        crop = fa.crops["buffalo"]
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
        np.testing.assert_array_equal(crop, buffalo_crop(aug.image, face, 112))
        assert not np.array_equal(crop, buffalo_crop(image, face, 112))
        x1, y1, x2, y2 = (int(round(v)) for v in expand_box(face.box, 0.5))
        near_faces[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)] = True
    # Nothing painted away from the faces.
    assert not (changed & ~near_faces).any()


def test_same_seed_same_bytes_other_seed_differs(models, load_photo):
    image = load_photo("insightface_t1.jpg")
    first = run(image, models, seed=11, n_augmentations=2, crop_style="all")
    again = run(image, models, seed=11, n_augmentations=2, crop_style="all")
    assert same_bytes(first, again)
    other = run(image, models, seed=12, n_augmentations=2, crop_style="all")
    assert not same_bytes(first, other)
    assert any(x.image.tobytes() != y.image.tobytes() for x, y in zip(first.augmentations, other.augmentations))
    # Within one request the augmentations differ too.
    assert first.augmentations[0].image.tobytes() != first.augmentations[1].image.tobytes()


def test_augmentation_k_does_not_depend_on_how_many_are_drawn(models, load_photo):
    """Augmentation k draws from its own generator (seed, k): the same whether the
    request asks for k + 1 augmentations or 16."""
    image = load_photo(TWO_FACES)
    full = run(image, models, seed=5, n_augmentations=16, crop_style="all")
    assert len(full.augmentations) == 16
    assert len({tuple(fa.mask_type for fa in aug.faces) for aug in full.augmentations}) > 1
    for k in (0, 1, 6):
        short = run(image, models, seed=5, n_augmentations=k + 1, crop_style="all")
        assert len(short.augmentations) == k + 1
        for i in range(k + 1):
            assert same_bytes(
                type(full)(full.width, full.height, 5, full.faces, [full.augmentations[i]]),
                type(short)(short.width, short.height, 5, short.faces, [short.augmentations[i]]),
            ), (k, i)


def test_no_mask_keeps_the_image_and_crops_the_original(models, load_photo):
    image = load_photo("facedet1mb_nine_kids.jpg")
    result = run(image, models, no_mask=True, crop_style="all", n_augmentations=2)
    assert len(result.faces) == 8 and len(result.augmentations) == 2
    for aug in result.augmentations:
        np.testing.assert_array_equal(aug.image, image)
        for face, fa in zip(result.faces, aug.faces):
            assert (fa.mask_type, fa.mask_color, fa.texture, fa.error) == (None, None, None, None)
            assert list(fa.crops) == list(CROP_STYLES)
            np.testing.assert_array_equal(fa.crops["buffalo"], buffalo_crop(image, face, 112))
            np.testing.assert_array_equal(fa.crops["original_cropping"], original_crop(image, face, size=112))
            assert fa.crops["scale_shift"].shape == (112, 112, 3)
    # scale_shift is drawn per augmentation.
    a, b = (aug.faces[0].crops["scale_shift"] for aug in result.augmentations)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    "style,expected",
    [
        ("all", CROP_STYLES),
        ("none", ()),
        ("buffalo", ("buffalo",)),
        ("original_cropping", ("original_cropping",)),
        ("scale_shift", ("scale_shift",)),
    ],
)
def test_crop_styles(models, load_photo, style, expected):
    image = load_photo(ONE_FACE)
    result = run(image, models, crop_style=style)
    [face] = result.faces
    [fa] = result.augmentations[0].faces
    assert tuple(fa.crops) == expected
    assert all(c.shape == (112, 112, 3) and c.dtype == np.uint8 for c in fa.crops.values())
    check_choice(fa)  # the mask is painted whatever is cropped
    assert not np.array_equal(result.augmentations[0].image, image)
    if style == "original_cropping":
        np.testing.assert_array_equal(fa.crops[style], original_crop(result.augmentations[0].image, face, size=112))


def test_crop_size_224(models, load_photo):
    result = run(load_photo(TWO_FACES), models, crop_style="all", crop_size=224)
    for face, fa in zip(result.faces, result.augmentations[0].faces):
        assert {k: c.shape for k, c in fa.crops.items()} == {k: (224, 224, 3) for k in CROP_STYLES}
        np.testing.assert_array_equal(fa.crops["buffalo"], buffalo_crop(result.augmentations[0].image, face, 224))


def test_scale_shift_ranges_reach_the_crop(models, load_photo):
    """With no scale or shift to draw, scale_shift is exactly the aligned crop."""
    result = run(load_photo(ONE_FACE), models, crop_style="all", scale_min=1.0, scale_max=1.0, shift_max=0.0)
    crops = result.augmentations[0].faces[0].crops
    np.testing.assert_array_equal(crops["scale_shift"], crops["buffalo"])


def test_a_face_that_cannot_be_meshed_is_cropped_without_a_mask(models, load_photo):
    image = load_photo(PROFILES)
    result = run(image, models, crop_style="all", n_augmentations=2)
    meshed = [f.meshed for f in result.faces]
    assert len(meshed) == 8 and meshed.count(False) == 2
    for aug in result.augmentations:
        for face, fa in zip(result.faces, aug.faces):
            assert list(fa.crops) == list(CROP_STYLES)
            if face.meshed:
                check_choice(fa)
            else:
                assert (fa.mask_type, fa.mask_color, fa.texture) == (None, None, None)
                assert fa.error.startswith("no_mesh")
                # Its crops come from the detector's 5 points, on the (masked) image.
                np.testing.assert_array_equal(fa.crops["buffalo"], buffalo_crop(aug.image, face, 112))
                # No mask painted on it: the middle of its box is untouched.
                x1, y1, x2, y2 = face.box
                cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
                inner = np.s_[int(cy - h) : int(cy + h), int(cx - w) : int(cx + w)]
                np.testing.assert_array_equal(aug.image[inner], image[inner])


@pytest.mark.parametrize("source", ["photo", "gradient"])
def test_no_face_gives_empty_results(models, load_photo, source):
    image = load_photo(NO_FACE) if source == "photo" else np.asarray(gradient_rgb(320, 240))
    result = run(image, models, seed=9, n_augmentations=3, crop_style="all")
    assert result.faces == [] and result.augmentations == []
    assert (result.width, result.height, result.seed) == (image.shape[1], image.shape[0], 9)


def test_mask_types_limit_the_choice(models, load_photo):
    result = run(load_photo("facedet1mb_nine_kids.jpg"), models, mask_types="surgical, cloth", n_augmentations=2)
    drawn = {fa.mask_type for aug in result.augmentations for fa in aug.faces}
    assert drawn == {"surgical", "cloth"}  # 16 draws: both come up
    for aug in result.augmentations:
        for fa in aug.faces:
            check_choice(fa)


def test_parameters_are_checked():
    assert MaskAugmentParams().types == MASK_TYPES and MaskAugmentParams().styles == ("buffalo",)
    params = MaskAugmentParams(mask_types=" cloth , N95,cloth", crop_style="all")
    assert params.mask_types == "cloth,N95" and params.types == ("cloth", "N95") and params.styles == CROP_STYLES
    assert MaskAugmentParams(crop_style="none").styles == ()
    bad = [
        {"mask_types": "surgical,balaclava"},
        {"mask_types": "Surgical"},
        {"scale_min": 1.2, "scale_max": 1.0},
        {"n_augmentations": 0},
        {"n_augmentations": 17},
        {"crop_style": "tight"},
        {"crop_size": 16},
        {"seed": -1},
        {"seed": MAX_SEED + 1},
        {"colour": "red"},
    ]
    for fields in bad:
        with pytest.raises(ValidationError):
            MaskAugmentParams(**fields)
    with pytest.raises(ValidationError, match="balaclava"):
        MaskAugmentParams(mask_types="balaclava")
    with pytest.raises(ValidationError, match="scale_min"):
        MaskAugmentParams(scale_min=1.2, scale_max=1.0)
    assert MaskAugmentParams(scale_min=1.0, scale_max=1.0).scale_max == 1.0
