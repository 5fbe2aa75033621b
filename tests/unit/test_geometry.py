import pytest

from deployments.geometry import (
    box_is_empty,
    clip_box,
    expand_box,
    fit_longest_side,
    iou,
    letterbox_size,
    square_around,
)


def test_expand_grows_each_side_by_the_factor():
    assert expand_box([10, 20, 30, 60], 0.5) == (0.0, 0.0, 40.0, 80.0)
    assert expand_box([10, 20, 30, 60], 0.0) == (10.0, 20.0, 30.0, 60.0)


def test_clip_rounds_outward_and_stays_inside():
    assert clip_box((-5.5, 2.2, 50.1, 40.9), 48, 40) == (0, 2, 48, 40)
    assert clip_box((10.4, 10.6, 20.2, 20.7), 100, 100) == (10, 10, 21, 21)


def test_box_entirely_outside_is_empty():
    box = clip_box((120, 130, 150, 160), 100, 100)
    assert box_is_empty(box)
    assert not box_is_empty((0, 0, 1, 1))


def test_fit_longest_side_only_shrinks():
    assert fit_longest_side(1000, 500, 448) == (448, 224)
    assert fit_longest_side(100, 50, 448) == (100, 50)
    assert fit_longest_side(3, 1000, 10) == (1, 10)


def test_square_around_is_centred_on_the_longest_side_and_clipped():
    # 20 x 40 box centred at (50, 60); factor 2 -> an 80 px square
    assert square_around((40, 40, 60, 80), 2.0, 200, 200) == (10, 20, 90, 100)
    # Near the top-left corner the square is cut short by the image.
    assert square_around((0, 0, 10, 10), 3.0, 100, 100) == (0, 0, 20, 20)
    assert square_around((90, 90, 100, 100), 3.0, 100, 100) == (80, 80, 100, 100)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty boxes: no division by zero
    assert isinstance(iou((0, 0, 1, 1), (0, 0, 1, 1)), float)


def test_letterbox_size_follows_insightfaces_rule():
    assert letterbox_size(480, 640, 640) == (480, 640)
    assert letterbox_size(1000, 500, 640) == (640, 320)
    assert letterbox_size(500, 1000, 640) == (320, 640)
    assert letterbox_size(333, 1000, 640) == (213, 640)  # int() truncates 213.12
    assert letterbox_size(640, 640, 640) == (640, 640)
