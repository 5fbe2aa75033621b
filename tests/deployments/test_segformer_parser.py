"""SegFormerParser through the real loading path: a random SegFormer written with
save_pretrained (no real face-parsing weights exist here), loaded from its folder."""

import json

import numpy as np
import pytest

from deployments.segformer_parser import CELEBAMASK_LABELS, SegFormerParser, SegFormerParserConfig
from deployments.types import ParseRequest

FACE = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)


@pytest.fixture(scope="module")
def parser(asset):
    return SegFormerParser(SegFormerParserConfig(checkpoint_dir=str(asset("segformer-parser-tiny"))))


@pytest.fixture(scope="module")
def rois(cartoon_dir):
    from serve_app.imaging import decode_image

    image = decode_image((cartoon_dir / "kanosawa_anime_5faces.png").read_bytes())
    return [image[40:170, 70:200], image[180:330, 170:320], image[0:60, 0:45], np.ascontiguousarray(image[::2, ::2])]


def test_checkpoint_has_the_real_format(asset):
    ckpt = asset("segformer-parser-tiny")
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model_type"] == "segformer" and len(config["id2label"]) == 19
    assert [config["id2label"][str(i)] for i in range(19)] == list(CELEBAMASK_LABELS)
    assert (ckpt / "preprocessor_config.json").exists() and (ckpt / "model.safetensors").exists()


def test_one_probability_map_per_roi_at_roi_size(parser, rois):
    out = parser.predict([ParseRequest(r, FACE) for r in rois])
    assert [o.shape for o in out] == [r.shape[:2] for r in rois]
    for o in out:
        assert o.dtype == np.float32 and 0 <= o.min() and o.max() <= 1


def test_mixed_sizes_in_one_batch_equal_one_by_one(parser, rois):
    together = parser.predict([ParseRequest(r, FACE) for r in rois])
    alone = [parser.predict([ParseRequest(r, FACE)])[0] for r in rois]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_labels_travel_with_each_item(parser, rois):
    roi = rois[0]
    face, hair, everything = parser.predict(
        [ParseRequest(roi, FACE), ParseRequest(roi, (13,)), ParseRequest(roi, tuple(range(19)))])
    np.testing.assert_allclose(everything, 1.0, atol=1e-4)  # softmax over all labels sums to 1
    assert not np.allclose(face, hair)
    np.testing.assert_allclose(parser.predict([ParseRequest(roi, FACE + (13,))])[0],
                               np.clip(face + hair, 0, 1), atol=1e-4)


def test_empty_batch(parser):
    assert parser.predict([]) == []
