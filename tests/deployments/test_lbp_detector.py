import numpy as np
import pytest

from deployments.lbp_detector.model import LBPDetector, LBPDetectorConfig
from deployments.types import BOX_ONLY
from serve_app.imaging import decode_image


@pytest.fixture(scope="module")
def detector(asset):
    return LBPDetector(LBPDetectorConfig(cascade_path=str(asset("lbp-detector-cascade"))))


def load(path):
    return decode_image(path.read_bytes())


def boxes_of(faces) -> np.ndarray:
    return np.array([f.box for f in faces], np.float32).reshape(-1, 4)


def test_finds_the_five_faces(detector, cartoon_dir):
    image = load(cartoon_dir / "kanosawa_anime_5faces.png")
    (found,) = detector.predict([image])
    assert len(found) == 5
    assert all(f.scheme == BOX_ONLY and f.points.shape == (0, 2) and f.box.dtype == np.float32 for f in found)
    boxes, scores = boxes_of(found), [f.score for f in found]
    h, w = image.shape[:2]
    assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert scores == sorted(scores, reverse=True)
    # Five distinct faces: no two boxes overlap much.
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(5) * 1e9
    assert gaps.min() > 50


def test_finds_most_of_the_8x8_grid(detector, cartoon_dir):
    (found,) = detector.predict([load(cartoon_dir / "bchao1_anime_face_grid_8x8.jpg")])
    assert 58 <= len(found) <= 64


@pytest.mark.parametrize("name", ["insightface_t1.jpg", "dlib_dogs_noface.jpg"])
def test_nothing_on_real_photos_where_the_cascade_finds_none(detector, photos_dir, name):
    (found,) = detector.predict([load(photos_dir / name)])
    assert found == []  # nothing found: an empty list


def test_greyscale_input_gives_the_same_boxes(detector, cartoon_dir):
    import cv2

    image = load(cartoon_dir / "kanosawa_anime_5faces.png")
    rgb, grey = detector.predict([image, cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)])
    assert np.array_equal(boxes_of(rgb), boxes_of(grey)) and len(rgb) == 5


def test_a_batch_is_the_same_as_one_by_one(detector, cartoon_dir):
    images = [load(cartoon_dir / n) for n in ("kanosawa_anime_5faces.png", "cartoonface_11008.jpg")]
    together = detector.predict(images)
    alone = [detector.predict([im])[0] for im in images]
    for a, b in zip(together, alone):
        assert np.array_equal(boxes_of(a), boxes_of(b))
        assert [f.score for f in a] == [f.score for f in b]


def test_a_bad_cascade_path_fails_at_load(tmp_path):
    bad = tmp_path / "x.xml"
    bad.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ValueError, match="cascade"):
        LBPDetector(LBPDetectorConfig(cascade_path=str(bad)))
