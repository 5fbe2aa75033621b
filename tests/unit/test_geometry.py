from serve_app.geometry import box_is_empty, clip_box, expand_box, fit_longest_side


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
