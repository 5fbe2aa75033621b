"""SegFormerParser through the real loading paths of both checkpoint formats: a random
SegFormer written with save_pretrained (no real SegFormer face-parsing weights exist
here), and the small trained UNet (model_best.pth), the production parser's stand-in."""

import json

import numpy as np
import pytest

from deployments.segformer_parser.checkpoint import CELEBAMASK_LABELS
from deployments.segformer_parser.model import SegFormerParser, SegFormerParserConfig
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


def test_a_list_of_rois_is_one_item(parser, rois, asset):
    """The faces of an image travel as one list item (one call) and come back as a list
    in order, whatever the forward-pass size; item_size counts the faces."""
    alone = [parser.predict([ParseRequest(r, FACE)])[0] for r in rois]
    group, single = parser.predict([[ParseRequest(r, FACE) for r in rois[:3]], ParseRequest(rois[3], FACE)])
    assert isinstance(group, list) and len(group) == 3 and single.shape == rois[3].shape[:2]
    for a, b in zip([*group, single], alone):
        np.testing.assert_allclose(a, b, atol=1e-5)
    small_passes = SegFormerParser(
        SegFormerParserConfig(checkpoint_dir=str(asset("segformer-parser-tiny")), max_forward_batch=2)
    )
    (again,) = small_passes.predict([[ParseRequest(r, FACE) for r in rois]])
    for a, b in zip(again, alone):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert SegFormerParser.item_size([ParseRequest(r, FACE) for r in rois]) == 4
    assert SegFormerParser.item_size(ParseRequest(rois[0], FACE)) == 1
    assert parser.predict([[]]) == [[]]


def test_labels_travel_with_each_item(parser, rois):
    roi = rois[0]
    face, hair, everything = parser.predict(
        [ParseRequest(roi, FACE), ParseRequest(roi, (13,)), ParseRequest(roi, tuple(range(19)))]
    )
    np.testing.assert_allclose(everything, 1.0, atol=1e-4)  # softmax over all labels sums to 1
    assert not np.allclose(face, hair)
    np.testing.assert_allclose(
        parser.predict([ParseRequest(roi, FACE + (13,))])[0], np.clip(face + hair, 0, 1), atol=1e-4
    )


def test_empty_batch(parser):
    assert parser.predict([]) == []


# ---- the small trained UNet behind the same class ---------------------------------------


@pytest.fixture(scope="module")
def unet(asset):
    return SegFormerParser(SegFormerParserConfig(checkpoint_dir=str(asset("face-parser-unet-small"))))


@pytest.fixture(scope="module")
def celebamask(asset):
    """[(RGB image, ground-truth CelebAMask-HQ id map)] of the benchmark pairs."""
    from PIL import Image

    root = asset("benchmark-celebamask-hq-parsing")
    return [
        (np.asarray(Image.open(p).convert("RGB")), np.asarray(Image.open(root / "masks" / f"{p.stem}.png")))
        for p in sorted((root / "images").glob("*.jpg"))
    ]


@pytest.fixture(scope="module")
def lfw_face(photos_dir):
    """A real face the UNet was not trained on (LFW, 250x250, face centred)."""
    from serve_app.imaging import decode_image

    return decode_image((photos_dir / "lfw_Rob_Lowe_0001.jpg").read_bytes())


def test_the_checkpoint_format_picks_the_network(parser, unet, tmp_path):
    assert (parser.kind, unet.kind) == ("segformer", "unet")
    assert unet.input_hw == (256, 256) and unet.num_labels == 19
    with pytest.raises(FileNotFoundError, match="config.json.*model_best.pth"):
        SegFormerParser(SegFormerParserConfig(checkpoint_dir=str(tmp_path)))


def test_unet_mixed_sizes_in_one_batch_equal_one_by_one(unet, rois, lfw_face):
    items = [ParseRequest(r, FACE) for r in [*rois, lfw_face]]
    together = unet.predict(items)
    assert [o.shape for o in together] == [it.roi.shape[:2] for it in items]
    for a, item in zip(together, items):
        assert a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
        np.testing.assert_allclose(a, unet.predict([item])[0], atol=1e-5)


def test_unet_probabilities_cover_the_labels_once(unet, lfw_face):
    face, hair, everything = unet.predict(
        [ParseRequest(lfw_face, FACE), ParseRequest(lfw_face, (13,)), ParseRequest(lfw_face, tuple(range(19)))]
    )
    np.testing.assert_allclose(everything, 1.0, atol=1e-4)
    np.testing.assert_allclose(
        unet.predict([ParseRequest(lfw_face, FACE + (13,))])[0], np.clip(face + hair, 0, 1), atol=1e-4
    )


def test_unet_labels_are_celebamask_ids_on_a_face_it_never_saw(unet, lfw_face):
    # Skin dominates the middle of the face, hair the band above the forehead: with the
    # checkpoint's own channel order, id 1 would be u_lip and id 13 hair's neighbour.
    skin, hair = unet.predict([ParseRequest(lfw_face, (1,)), ParseRequest(lfw_face, (13,))])
    centre, top = (slice(100, 150), slice(100, 150)), (slice(40, 70), slice(100, 150))
    assert skin[centre].mean() > 0.5 and hair[centre].mean() < 0.1, (skin[centre].mean(), hair[centre].mean())
    assert hair[top].mean() > 0.6 and skin[top].mean() < 0.3, (hair[top].mean(), skin[top].mean())


def test_unet_agrees_with_celebamask_ground_truth(unet, celebamask):
    """Every label at once: argmax over the 19 channels against the annotated ids (pixel
    accuracy 0.76-0.94 per pair with the permutation, about 0.5 without it), and the
    pipeline's face masks (skin..l_lip, with and without hair) at its 0.5 threshold.
    The pairs are from the UNet's training split: these are optimistic, not its quality."""
    import cv2

    images = [im for im, _ in celebamask]
    probs = unet.label_probabilities(images)  # [N, 19, 256, 256], channel = id
    accuracy, face_iou, hair_iou = [], [], []
    for p, (image, ids) in zip(probs, celebamask):
        labels = cv2.resize(p.argmax(0).astype(np.uint8), ids.shape[::-1], interpolation=cv2.INTER_NEAREST)
        accuracy.append((labels == ids).mean())
        face, with_hair = unet.predict([ParseRequest(image, FACE), ParseRequest(image, FACE + (13,))])
        face_iou.append(mask_iou(face >= 0.5, np.isin(ids, FACE)))
        hair_iou.append(mask_iou(with_hair >= 0.5, np.isin(ids, FACE + (13,))))
    assert min(accuracy) > 0.72 and np.mean(accuracy) > 0.82, accuracy
    assert min(face_iou) > 0.8 and np.mean(face_iou) > 0.87, face_iou
    assert min(hair_iou) > 0.7 and np.mean(hair_iou) > 0.85, hair_iou


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


# ---- the ONNX Runtime path (runtime: onnx | onnx-int8, deployments/segformer_parser/onnx.py) -----


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("parser_onnx"))


def onnx_parser(asset, name: str, runtime: str, cache: str) -> SegFormerParser:
    return SegFormerParser(
        SegFormerParserConfig(checkpoint_dir=str(asset(name)), runtime=runtime, onnx_cache_dir=cache)
    )


def test_onnx_export_matches_torch_on_the_segformer(asset, parser, rois, onnx_cache):
    fast = onnx_parser(asset, "segformer-parser-tiny", "onnx", onnx_cache)
    assert fast.describe() == {"runtime": "onnx (CPUExecutionProvider)"}  # what the health entry reports
    assert (fast.kind, fast.input_hw) == ("segformer", (128, 128))
    assert parser.describe() == {"runtime": "cpu"}  # torch: its device
    items = [ParseRequest(r, FACE) for r in rois]
    for a, b in zip(fast.predict(items), parser.predict(items)):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert fast.predict([]) == []


def test_onnx_export_matches_torch_on_the_trained_unet(asset, unet, celebamask, lfw_face, onnx_cache):
    fast = onnx_parser(asset, "face-parser-unet-small", "onnx", onnx_cache)
    images = [im for im, _ in celebamask] + [lfw_face]
    np.testing.assert_allclose(fast.label_probabilities(images), unet.label_probabilities(images), atol=1e-4)
    items = [ParseRequest(im, FACE + (13,)) for im in images]
    for a, b in zip(fast.predict(items), unet.predict(items)):
        assert mask_iou(a >= 0.5, b >= 0.5) > 0.999


def test_int8_stays_close_to_torch(asset, parser, rois, onnx_cache):
    """Dynamic int8 quantisation moves probabilities a little, not the masks: every
    MatMul of the SegFormer runs in int8 here."""
    import onnx

    import deployments.segformer_parser.onnx as parser_onnx

    fast = onnx_parser(asset, "segformer-parser-tiny", "onnx-int8", onnx_cache)
    assert fast.describe() == {"runtime": "onnx-int8 (CPUExecutionProvider)"}
    graph = onnx.load(str(parser_onnx.export_path(asset("segformer-parser-tiny"), "onnx-int8", onnx_cache)))
    ops = {node.op_type for node in graph.graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops, sorted(ops)
    items = [ParseRequest(r, FACE) for r in rois]
    for a, b in zip(fast.predict(items), parser.predict(items)):
        assert np.abs(a - b).max() < 0.05
        assert mask_iou(a >= 0.5, b >= 0.5) >= 0.98


def test_the_export_is_cached(asset, onnx_cache):
    import deployments.segformer_parser.onnx as parser_onnx

    path = parser_onnx.export_path(asset("segformer-parser-tiny"), "onnx", onnx_cache)
    onnx_parser(asset, "segformer-parser-tiny", "onnx", onnx_cache)
    written = path.stat().st_mtime_ns
    onnx_parser(asset, "segformer-parser-tiny", "onnx", onnx_cache)  # opens the file, exports nothing
    assert path.stat().st_mtime_ns == written
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]


def test_unknown_runtime_is_refused(asset):
    with pytest.raises(ValueError, match="torch, onnx, onnx-int8, auto"):
        SegFormerParser(SegFormerParserConfig(checkpoint_dir=str(asset("segformer-parser-tiny")), runtime="tensorrt"))


def test_auto_is_int8_on_cpu_and_torch_on_a_gpu():
    from deployments.runtime import resolve_runtime
    from deployments.segformer_parser.model import RUNTIMES
    from deployments.types import Placement

    assert resolve_runtime("auto", Placement(), RUNTIMES) == "onnx-int8"
    assert resolve_runtime("auto", Placement(device="cuda"), RUNTIMES) == "torch"
    assert resolve_runtime("onnx", Placement(device="cuda"), RUNTIMES) == "onnx"  # an explicit choice stays


def test_the_folded_decode_head_gives_transformers_logits(asset):
    """deployments/segformer_parser/head.py computes the decode head with its layers folded;
    with every decoder weight and batch-norm statistic random (a trained head's are not
    the identity), its logits must equal transformers' own forward."""
    import torch
    from transformers import SegformerForSemanticSegmentation

    from deployments.segformer_parser.head import FoldedSegformer

    model = SegformerForSemanticSegmentation.from_pretrained(str(asset("segformer-parser-tiny"))).eval()
    gen = torch.Generator().manual_seed(0)
    head = model.decode_head
    with torch.no_grad():
        for tensor in (*head.parameters(), head.batch_norm.running_mean):
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.5)
        head.batch_norm.running_var.copy_(torch.rand(head.batch_norm.running_var.shape, generator=gen) + 0.5)
        pixels = torch.randn(2, 3, 96, 128, generator=gen)
        want = model(pixel_values=pixels).logits
        got = FoldedSegformer(model)(pixels)
    assert got.shape == want.shape
    scale = float(want.abs().max())
    assert scale > 1.0  # the random head gives logits that mean something to compare
    assert float((got - want).abs().max()) < 1e-4 * scale
