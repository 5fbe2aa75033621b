"""RetinaFace on the real SCRFD exports (det_500m, det_2.5g): parity with insightface's
own SCRFD class run directly, and recall on dlib's human-labelled faces."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from deployments.retinaface import RetinaFace, RetinaFaceConfig
from deployments.types import FIVE_POINT
from serve_app.imaging import decode_image
from tests.helpers import iou

DETECTORS = ["retinaface-det-500m", "retinaface-det-2.5g"]


def boxes(faces) -> np.ndarray:
    return np.array([f.box for f in faces], np.float32).reshape(-1, 4)


def scores(faces) -> np.ndarray:
    return np.array([f.score for f in faces], np.float32)


def landmarks(faces) -> np.ndarray:
    return np.array([f.points for f in faces], np.float32).reshape(-1, 5, 2)


@pytest.fixture(scope="module", params=DETECTORS)
def pair(request, asset):
    """(ours, insightface's SCRFD on the same file with the same settings)."""
    from insightface.model_zoo import get_model

    path = str(asset(request.param))
    reference = get_model(path, providers=["CPUExecutionProvider"])
    reference.prepare(-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
    return RetinaFace(RetinaFaceConfig(model_path=path)), reference


@pytest.fixture(scope="module")
def detector(asset):
    return RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))


def photos(photos_dir):
    return sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def test_same_faces_as_insightface_on_every_test_photo(pair, photos_dir):
    ours, reference = pair
    worst_iou, total = 1.0, 0
    for path in photos(photos_dir):
        rgb = decode_image(path.read_bytes())
        (found,) = ours.predict([rgb])
        det, kps = reference.detect(np.ascontiguousarray(rgb[..., ::-1]), input_size=(640, 640))
        assert len(found) == len(det), path.name
        total += len(found)
        if len(found) == 0:
            continue
        overlap = np.diag(iou(boxes(found), det[:, :4]))  # same order: best score first
        worst_iou = min(worst_iou, float(overlap.min()))
        assert overlap.min() >= 0.99, path.name
        np.testing.assert_allclose(scores(found), det[:, 4], atol=1e-4)
        np.testing.assert_allclose(landmarks(found), kps, atol=0.05)
    name = ours.cfg.model_path.rsplit("/", 1)[-1]
    print(f"\n{name}: {total} faces on the test photos, worst IoU vs insightface {worst_iou:.6f}")
    assert total > 100  # the selfie alone has over a hundred


def test_recall_on_dlib_labelled_faces(pair, asset):
    """Human-labelled dlib boxes are tight (brows to chin), SCRFD's reach the forehead,
    hence the usual IoU >= 0.4 match."""
    detector = pair[0]
    folder = asset("benchmark-dlib-faces")
    found_total = labelled_total = 0
    print(f"\n{detector.cfg.model_path.rsplit('/', 1)[-1]}:")
    for image in ET.parse(folder / "training.xml").getroot().iter("image"):
        truth = np.array([[float(b.get("left")), float(b.get("top")),
                           float(b.get("left")) + float(b.get("width")), float(b.get("top")) + float(b.get("height"))]
                          for b in image.iter("box")])
        (found,) = detector.predict([decode_image((folder / image.get("file")).read_bytes())])
        matched = (iou(truth, boxes(found)).max(axis=1) >= 0.4) if len(found) else np.zeros(len(truth), bool)
        print(f"  {image.get('file')}: recall {matched.sum()}/{len(truth)} = {matched.mean():.2f}"
              f" ({len(found)} detections)")
        found_total += int(matched.sum())
        labelled_total += len(truth)
    print(f"  overall recall at IoU>=0.4: {found_total}/{labelled_total} = {found_total / labelled_total:.3f}")
    assert found_total / labelled_total >= 0.9


def test_result_shapes_and_order(detector, photos_dir):
    image = decode_image((photos_dir / "insightface_t1.jpg").read_bytes())
    (found,) = detector.predict([image])
    assert len(found) == 6
    for f in found:
        assert f.scheme == FIVE_POINT and f.box.shape == (4,) and f.points.shape == (5, 2)
        assert f.box.dtype == np.float32 and f.points.dtype == np.float32 and isinstance(f.score, float)
        assert f.pose is None and f.five is None
    s = list(scores(found))
    assert s == sorted(s, reverse=True) and min(s) >= 0.5
    # Every landmark lies inside (or at the edge of) its face box.
    b, lm = boxes(found), landmarks(found)
    lo, hi = b[:, None, :2] - 2, b[:, None, 2:] + 2
    assert ((lm >= lo) & (lm <= hi)).all()


def test_no_face_is_an_empty_result(detector, photos_dir):
    (found,) = detector.predict([decode_image((photos_dir / "inspireface_view_noface.jpg").read_bytes())])
    assert found == []  # nothing found: an empty list


def test_a_batch_is_the_same_as_one_at_a_time(detector, photos_dir):
    images = [decode_image((photos_dir / n).read_bytes())
              for n in ("insightface_t1.jpg", "inspireface_view_noface.jpg", "3ddfa_trump_hillary.jpg")]
    batched = detector.predict(images)
    assert detector.predict([]) == []
    for image, got in zip(images, batched):
        (alone,) = detector.predict([image])
        assert np.array_equal(boxes(got), boxes(alone)) and np.array_equal(landmarks(got), landmarks(alone))
        assert np.array_equal(scores(got), scores(alone))


def test_thresholds_and_size_are_configurable(asset, photos_dir):
    path = str(asset("retinaface-det-500m"))
    image = decode_image((photos_dir / "facedet1mb_worlds_largest_selfie.jpg").read_bytes())
    (default,) = RetinaFace(RetinaFaceConfig(model_path=path)).predict([image])
    (strict,) = RetinaFace(RetinaFaceConfig(model_path=path, det_thresh=0.8)).predict([image])
    (small,) = RetinaFace(RetinaFaceConfig(model_path=path, det_size=320)).predict([image])
    assert scores(strict).min() >= 0.8 and len(strict) < len(default)
    assert len(small) < len(default)  # tiny faces vanish at a quarter of the pixels
    with pytest.raises(ValueError, match="multiple of 32"):
        RetinaFace(RetinaFaceConfig(model_path=path, det_size=300))


def test_refuses_a_file_that_is_not_a_detector(asset):
    with pytest.raises(ValueError, match="not a RetinaFace"):
        RetinaFace(RetinaFaceConfig(model_path=str(asset("arcface-mobilefacenet-128d"))))
