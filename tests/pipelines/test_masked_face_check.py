"""An independent judge of mask augmentation: the Ultra-Light detector retrained on real
masked faces (WIDER + MAFA) must read the shared photos' faces as `face` and the same
faces after augmentation as `masked_face`. Prints the rate per mask type."""

import cv2
import numpy as np
import pytest

from deployments.facemesh.model import FaceMesh, FaceMeshConfig
from serve_app.faces.mask_painting import MASK_TYPES, apply_mask, draw_augmentation, load_templates
from tests.helpers import iou
from tests.ultralight import MaskedFaceDetector

ALREADY_MASKED = "inspireface_mask2_masked.jpg"  # a photo of a person wearing a real mask
MIN_RATE = 0.8  # masked faces read as masked, over all types
MIN_RATE_PER_TYPE = 0.6


@pytest.fixture(scope="module")
def judge(asset):
    return MaskedFaceDetector(str(asset("ultralight-rfb-640-masked-face")))


@pytest.fixture(scope="module")
def photos(photos_dir):
    mesh = FaceMesh(FaceMeshConfig(max_num_faces=5))
    out = []
    for path in sorted(photos_dir.iterdir()):
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        faces = mesh.predict([image])[0]
        if faces:
            out.append((path.name, image, faces))
    mesh.close()
    return out


def read_as(detections, box):
    """The judge's label for the face in `box`: its best-overlapping detection's class,
    None when it detects nothing there."""
    if not detections:
        return None
    overlap = iou([d[0] for d in detections], [box])[:, 0]
    best = int(overlap.argmax())
    return detections[best][1] if overlap[best] > 0.3 else None


def test_originals_read_as_faces_and_masked_ones_as_masked_faces(photos, asset, judge):
    library = load_templates(asset("maskthe-face-masks"))
    originals = {"face": 0, "masked_face": 0, None: 0}
    counts = {t: [0, 0] for t in MASK_TYPES}  # [faces judged, read as masked_face]
    for name, image, faces in photos:
        before = [read_as(judge.detect(image), f.box) for f in faces]
        if name == ALREADY_MASKED:
            assert before == ["masked_face"]  # the judge knows a real mask
            continue
        for label in before:
            originals[label] += 1
        rng = np.random.default_rng(sum(map(ord, name)))
        for mask_type in MASK_TYPES:
            out = image
            for face in faces:  # every face of the photo masked, as the pipeline does
                _, color, texture = draw_augmentation(rng, [mask_type], library.texture_names)
                out, _, _ = apply_mask(out, face, mask_type, color, texture, rng, library=library)
            after = [read_as(judge.detect(out), f.box) for f in faces]
            for was, now in zip(before, after):
                if was == "face":  # only faces the judge saw unmasked count
                    counts[mask_type][0] += 1
                    counts[mask_type][1] += now == "masked_face"
    print(f"\noriginals read as: {originals}")
    for mask_type, (n, masked) in counts.items():
        print(f"{mask_type:15s} {masked:3d} / {n:3d} read as masked_face ({masked / n:.0%})")
    total, masked = sum(n for n, _ in counts.values()), sum(m for _, m in counts.values())
    print(f"{'all':15s} {masked:3d} / {total:3d} ({masked / total:.0%})")
    # Unmasked photos read as faces (a miss is allowed: small or side faces).
    assert originals["masked_face"] == 0 and originals["face"] >= 0.9 * sum(originals.values())
    assert masked / total >= MIN_RATE
    for mask_type, (n, m) in counts.items():
        assert m / n >= MIN_RATE_PER_TYPE, mask_type
