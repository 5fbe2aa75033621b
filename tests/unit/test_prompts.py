"""SAM2 prompts from a face-oval polygon (synthetic polygons)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from serve_app.faces.prompts import FacePrompt, face_prompt, negative_points, positive_points


def ellipse_polygon(cx, cy, rx, ry, n=36, tilt=0.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(tilt), np.sin(tilt)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1).astype(np.float32)


def inside(polygon, x, y) -> float:
    return cv2.pointPolygonTest(polygon.reshape(-1, 1, 2), (float(x), float(y)), True)


OVAL = ellipse_polygon(200, 150, 60, 80)


def test_box_is_the_polygon_box_grown_and_clipped():
    p = face_prompt(OVAL, 400, 300, expand=0.15)
    # oval box 140..260 x 70..230 (120 x 160); 15% each side = 18 / 24 px
    assert p.box == (122, 46, 278, 254)
    near_edge = face_prompt(ellipse_polygon(30, 20, 40, 40), 400, 300, expand=0.5)
    assert near_edge.box[:2] == (0, 0)
    assert face_prompt(OVAL, 400, 300, expand=0.0).box == (140, 70, 260, 230)


@pytest.mark.parametrize("n", [1, 5, 16, 64])
def test_positive_points_are_inside_distinct_and_counted(n):
    pts = positive_points(OVAL, n)
    assert len(pts) == n and len(set(pts)) == n
    assert all(inside(OVAL, x, y) > 0 for x, y in pts)


def test_positive_points_keep_away_from_the_edge_and_spread_out():
    pts = np.array(positive_points(OVAL, 16))
    depth = [inside(OVAL, x, y) for x, y in pts]
    assert min(depth) >= 0.1 * 120 - 1e-6  # EDGE_MARGIN of the face's smaller side
    # spread: the points span most of the usable area, not a clump at the centre
    assert np.ptp(pts[:, 0]) > 60 and np.ptp(pts[:, 1]) > 90


def test_positive_points_inside_a_turned_non_convex_oval():
    # A kidney shape, as a turned face's projected oval can be: a centroid can fall
    # outside it, and points must still land inside.
    t = np.linspace(0, 2 * np.pi, 36, endpoint=False)
    r = 60 + 25 * np.cos(2 * t)
    kidney = np.stack([200 + r * np.cos(t), 150 + 0.6 * r * np.sin(t) - 20 * np.cos(t) ** 2], 1).astype(np.float32)
    pts = positive_points(kidney, 16)
    assert len(pts) == 16 and all(inside(kidney, x, y) > 0 for x, y in pts)


def test_prompts_are_deterministic():
    a = face_prompt(ellipse_polygon(210.3, 140.7, 55, 75, tilt=0.3), 400, 300, 0.15, 16)
    b = face_prompt(ellipse_polygon(210.3, 140.7, 55, 75, tilt=0.3), 400, 300, 0.15, 16)
    assert a == b


def test_negative_points_are_outside_the_box_and_inside_the_image():
    p = face_prompt(OVAL, 400, 300)
    negatives = [(x, y) for x, y, label in p.points if label == 0]
    x1, y1, x2, y2 = p.box
    assert len(negatives) == 8
    for x, y in negatives:
        assert 0 <= x <= 399 and 0 <= y <= 299
        assert not (x1 <= x <= x2 and y1 <= y <= y2)


def test_negative_points_at_the_border_and_for_a_full_image_box():
    # Box touching the left and top edges: only right/bottom side negatives remain.
    pts = negative_points((0, 0, 100, 80), 400, 300)
    assert pts and all(x > 100 or y > 80 for x, y in pts)
    assert negative_points((0, 0, 400, 300), 400, 300) == []


def test_points_format_and_labels():
    p = face_prompt(OVAL, 400, 300, pos_points=4)
    box, points = p.as_lists()
    assert box == list(p.box)
    assert [pt[2] for pt in points] == [1] * 4 + [0] * 8
    assert all(len(pt) == 3 for pt in points)


def test_zero_positive_points_and_a_degenerate_polygon():
    assert positive_points(OVAL, 0) == []
    flat = np.array([[10, 10], [20, 10], [30, 10]], np.float32)
    assert positive_points(flat, 16) == [(20.0, 10.0)]


def test_shift_and_extent_for_crops():
    p = FacePrompt((10, 20, 50, 60), ((30.0, 40.0, 1), (5.5, 70.0, 0)))
    assert p.extent() == (5, 20, 51, 71)
    assert p.shifted(5, 20) == FacePrompt((5, 0, 45, 40), ((25.0, 20.0, 1), (0.5, 50.0, 0)))
