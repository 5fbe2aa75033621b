"""The MaskTheFace set as serve_app.faces.mask_painting reads it, the left/right rule, and the seeded
draws. Placement on real faces is in tests/pipelines/test_masks_real_faces.py."""

import numpy as np
import pytest

from deployments.types import FaceLandmarks
from serve_app.faces.mask_painting import (
    MASK_COLORS,
    MASK_TYPES,
    TEXTURED,
    TINTABLE,
    YAW_THRESHOLD,
    apply_mask,
    choose_variant,
    draw_augmentation,
    load_templates,
    mask_anchor_points,
    parse_color,
)


@pytest.fixture(scope="module")
def library(asset):
    return load_templates(asset("maskthe-face-masks"))


def test_every_mask_type_has_a_template_and_both_turned_variants(library):
    assert library.mask_types == MASK_TYPES
    for name in MASK_TYPES:
        for variant in (name, f"{name}_left", f"{name}_right"):
            template = library.templates[variant]
            assert template.rgba.dtype == np.uint8 and template.rgba.shape[2] == 4
            assert template.anchors.shape == (6, 2)
            assert template.rgba[..., 3].max() == 255 and template.rgba[..., 3].min() == 0
    # masks.cfg's disabled (';') N95_left block is skipped, the active one read.
    np.testing.assert_array_equal(library.templates["N95_left"].anchors[0], [193, 331])
    # Sections without a template ("empty", "inpaint") are not mask types.
    assert "empty" not in library.templates


def test_textures_by_category(library):
    assert set(library.textures) == {"check", "floral", "fruits", "others"}
    assert len(library.texture_names) == 10 and "fruits/cherry" in library.texture_names
    for name in library.texture_names:
        texture = library.texture(name)
        assert texture.dtype == np.uint8 and texture.ndim == 3 and texture.shape[2] == 3
    with pytest.raises(ValueError, match="unknown texture"):
        library.texture("check/nope")


def test_library_is_read_once_per_path(asset, library):
    assert load_templates(asset("maskthe-face-masks")) is library
    assert load_templates() is library  # the default is the asset


def test_anchor_layout_the_placement_relies_on(library):
    """a, b, c along the top (b the nose bridge, highest), d and f the lower corners, e the
    lowest point: the layout mask_anchor_points maps to face points."""
    for name, template in library.templates.items():
        a, b, c, d, e, f = template.anchors
        assert a[0] < b[0] < c[0] and d[0] < e[0] < f[0], name
        assert b[1] < min(d[1], f[1]) and e[1] > max(a[1], c[1], d[1], f[1]), name


def test_left_templates_show_a_head_turned_to_the_image_left(library):
    """In `_left` templates the nose bridge (b) sits near the left end (the far cheek is
    foreshortened), in `_right` near the right end; frontal ones have it in the middle."""
    for name in MASK_TYPES:
        for variant, side in ((f"{name}_left", -1), (f"{name}_right", 1), (name, 0)):
            a, b, c = library.templates[variant].anchors[:3]
            balance = ((b[0] - a[0]) - (c[0] - b[0])) / (c[0] - a[0])  # -1: b at a, +1: b at c
            if side:
                assert np.sign(balance) == side and abs(balance) > 0.4, (variant, balance)
            else:
                assert abs(balance) < 0.15, (variant, balance)


def test_choose_variant_follows_the_yaw():
    assert choose_variant("surgical", 0.0) == "surgical"
    assert choose_variant("surgical", None) == "surgical"
    assert choose_variant("N95", YAW_THRESHOLD) == "N95"
    assert choose_variant("N95", -YAW_THRESHOLD - 0.1) == "N95_left"  # nose towards the image's left
    assert choose_variant("N95", YAW_THRESHOLD + 0.1) == "N95_right"
    assert choose_variant("cloth", 40.0, threshold=45.0) == "cloth"


def test_parse_color():
    assert parse_color("#177ABC") == (0x17, 0x7A, 0xBC)
    assert parse_color("ffffff") == (255, 255, 255)
    assert parse_color((1, 2, 3)) == (1, 2, 3)
    for bad in ("#12345", "blue", (0, 0, 256)):
        with pytest.raises(ValueError):
            parse_color(bad)


def test_draw_augmentation_is_seeded_and_consistent(library):
    textures = library.texture_names
    draws = [draw_augmentation(np.random.default_rng(5), MASK_TYPES, textures) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]

    rng = np.random.default_rng(2024)
    many = [draw_augmentation(rng, MASK_TYPES, textures) for _ in range(500)]
    assert {t for t, _, _ in many} == set(MASK_TYPES)
    for mask_type, color, texture in many:
        assert (color is not None) == (mask_type in TINTABLE)
        assert (texture is not None) == (mask_type in TEXTURED)
        assert color is None or color in MASK_COLORS
        assert texture is None or texture in textures
    assert len({c for _, c, _ in many if c}) == len(MASK_COLORS)
    assert len({x for _, _, x in many if x}) == len(textures)

    only = [draw_augmentation(rng, ["KN95"], textures) for _ in range(20)]
    assert {t for t, _, _ in only} == {"KN95"}
    with pytest.raises(ValueError):
        draw_augmentation(rng, [], textures)


def test_draw_augmentation_uses_the_same_draws_whatever_it_picks():
    """Three draws per call: a choice never shifts the stream the next augmentation sees."""
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    draw_augmentation(a, ["cloth"], ["x/y"])
    draw_augmentation(b, ["surgical", "gas"], ["x/y", "x/z"])
    assert a.integers(1 << 30) == b.integers(1 << 30)


def test_apply_mask_refuses_what_it_cannot_place(library):
    image = np.zeros((64, 64, 3), np.uint8)
    five = FaceLandmarks(
        box=np.array([10, 10, 50, 50], np.float32), score=0.9, points=np.full((5, 2), 30, np.float32), scheme="5-point"
    )
    with pytest.raises(ValueError, match="478-point mesh"):
        mask_anchor_points(five)
    with pytest.raises(ValueError, match="478-point mesh"):
        apply_mask(image, five, "surgical", library=library)
    with pytest.raises(ValueError, match="unknown mask type"):
        apply_mask(image, five, "scuba", library=library)
    with pytest.raises(ValueError, match="uint8 RGB"):
        apply_mask(image.astype(np.float32), five, "surgical", library=library)


def test_anchor_mesh_ids_sit_where_the_template_anchors_do(asset):
    """The mesh points behind the anchors, checked on MediaPipe's canonical face (cm, y up):
    a/c at the nose tip's height on the image-left/right cheek, b half way down the nose
    bridge, d/f at the lower lip's lowest height, e the lowest point of the face oval."""
    from deployments.facemesh.landmarks import OVAL_IDS
    from serve_app.faces.mask_painting import ANCHOR_MESH_IDS

    obj = asset("mediapipe-canonical-face") / "canonical_face_model.obj"
    v = np.array(
        [[float(t) for t in line.split()[1:4]] for line in obj.read_text().splitlines() if line.startswith("v ")]
    )
    at = [v[list(ids)].mean(axis=0) for ids in ANCHOR_MESH_IDS]
    height = v[10, 1] - v[152, 1]  # forehead to chin
    nose_tip, bridge_top, lower_lip = v[1], v[168], v[17]
    a, b, c, d, e, f = at
    assert abs(a[1] - nose_tip[1]) < 0.02 * height and abs(c[1] - nose_tip[1]) < 0.02 * height
    assert a[0] < 0 < c[0] and abs(a[0] + c[0]) < 1e-3  # mirrored; negative x: the image's left
    assert b[0] == 0 and abs(b[1] - (bridge_top[1] + nose_tip[1]) / 2) < 0.02 * height
    assert abs(d[1] - lower_lip[1]) < 0.03 * height and abs(f[1] - lower_lip[1]) < 0.03 * height
    assert d[0] < 0 < f[0]
    assert e[1] == v[list(OVAL_IDS), 1].min()
