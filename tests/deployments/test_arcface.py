"""ArcFace on the real ArcFace-trained MobileFaceNet (128-d): parity with insightface's
own ArcFaceONNX (its norm_crop alignment and get_feat), batching, LFW verification."""

import warnings

import numpy as np
import pytest

from deployments.arcface.model import RUNTIMES, ArcFace, ArcFaceConfig
from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.runtime import resolve_runtime
from deployments.types import Placement
from serve_app.faces.align import aligned_crops, alignment_matrix
from serve_app.imaging import decode_image


@pytest.fixture(scope="module", params=["openvino", "onnxruntime"])
def arcface(asset, request):
    """Every test runs on both runtimes: OpenVINO (what `auto` picks on a CPU) and ONNX Runtime."""
    return ArcFace(ArcFaceConfig(model_path=str(asset("arcface-mobilefacenet-128d")), runtime=request.param))


@pytest.fixture(scope="module")
def reference(asset):
    from insightface.model_zoo import get_model

    model = get_model(str(asset("arcface-mobilefacenet-128d")), providers=["CPUExecutionProvider"])
    # The README beside the file: normalisation lives inside the graph.
    assert model.input_mean == 0.0 and model.input_std == 1.0
    return model


@pytest.fixture(scope="module")
def faces(asset, photos_dir):
    """(RGB image, landmarks [5,2]) for every face the detector finds on a few photos."""
    detector = RetinaFace(RetinaFaceConfig(model_path=str(asset("retinaface-det-500m"))))
    out = []
    for name in (
        "insightface_t1.jpg",
        "3ddfa_trump_hillary.jpg",
        "facedet1mb_nine_kids.jpg",
        "lfw_Rob_Lowe_0001.jpg",
        "lfw_Rob_Lowe_0002.jpg",
        "lfw_Nathalie_Baye_0002.jpg",
    ):
        image = decode_image((photos_dir / name).read_bytes())
        (found,) = detector.predict([image])
        out.extend((image, face.points) for face in found)
    return out


def unit(v):
    v = np.asarray(v, np.float64).ravel()
    return v / np.linalg.norm(v)


def test_embedding_size_comes_from_the_model(arcface):
    assert arcface.embedding_size == 128 and arcface.input_size == 112


def test_same_embeddings_as_insightface(arcface, reference, faces):
    """Ours: our alignment + one batched predict. Theirs: norm_crop + get_feat per face."""
    from insightface.utils.face_align import norm_crop

    ours = arcface.predict([aligned_crops(image, lm, (112,))[0] for image, lm in faces])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage's deprecation notice inside norm_crop
        theirs = [reference.get_feat(norm_crop(np.ascontiguousarray(image[..., ::-1]), lm)) for image, lm in faces]
    cosines = np.array([unit(a) @ unit(b) for a, b in zip(ours, theirs)])
    print(f"\n{len(faces)} faces: cosine vs insightface min {cosines.min():.7f}, mean {cosines.mean():.7f}")
    assert len(faces) >= 15 and cosines.min() >= 0.999


def test_alignment_matches_norm_crop(faces):
    from insightface.utils.face_align import estimate_norm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        worst = max(np.abs(alignment_matrix(lm, 112) - estimate_norm(lm, 112)).max() for _, lm in faces)
    assert worst < 1e-3  # skimage estimates in float32, we in float64


def test_embeddings_are_unit_length_float32(arcface, faces):
    out = arcface.predict([aligned_crops(image, lm, (112,))[0] for image, lm in faces[:4]])
    assert len(out) == 4
    for e in out:
        assert e.shape == (128,) and e.dtype == np.float32
        assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5


def test_a_batch_is_the_same_as_one_at_a_time(arcface, faces):
    crops = [aligned_crops(image, lm, (112,))[0] for image, lm in faces[:8]]
    batched = arcface.predict(crops)
    alone = [arcface.predict([c])[0] for c in crops]
    np.testing.assert_allclose(np.stack(batched), np.stack(alone), atol=1e-5)
    assert arcface.predict([]) == []


def test_a_stack_of_crops_is_one_item(arcface, faces, asset):
    """All the faces of an image travel as one [K,112,112,3] item and come back [K,D],
    whatever the forward-pass size."""
    crops = [aligned_crops(image, lm, (112,))[0] for image, lm in faces[:5]]
    single = np.stack([arcface.predict([c])[0] for c in crops])
    stack, one = arcface.predict([np.stack(crops[:4]), crops[4]])
    assert stack.shape == (4, 128) and one.shape == (128,)
    np.testing.assert_allclose(stack, single[:4], atol=1e-5)
    np.testing.assert_allclose(one, single[4], atol=1e-5)
    small_passes = ArcFace(ArcFaceConfig(model_path=str(asset("arcface-mobilefacenet-128d")), max_forward_batch=2))
    (again,) = small_passes.predict([np.stack(crops)])
    np.testing.assert_allclose(again, single, atol=1e-5)
    (empty,) = arcface.predict([np.zeros((0, 112, 112, 3), np.uint8)])
    assert empty.shape == (0, 128)


def test_item_size_counts_faces(arcface, faces):
    """The serving adapter counts ArcFace batches in faces: a stack of K is K."""
    crops = [aligned_crops(image, lm, (112,))[0] for image, lm in faces[:3]]
    assert ArcFace.item_size(np.stack(crops)) == 3 and arcface.item_size(crops[0]) == 1
    assert ArcFace.item_size(np.zeros((0, 112, 112, 3), np.uint8)) == 0


def test_a_placement_with_more_threads_gives_the_same_embeddings(arcface, faces, asset):
    crops = [aligned_crops(image, lm, (112,))[0] for image, lm in faces[:3]]
    two = ArcFace(ArcFaceConfig(model_path=str(asset("arcface-mobilefacenet-128d"))), Placement(threads=2))
    np.testing.assert_allclose(np.stack(two.predict(crops)), np.stack(arcface.predict(crops)), atol=1e-5)


def test_crops_of_another_size_are_resized(arcface, faces):
    image, lm = faces[0]
    small, big = aligned_crops(image, lm, (112, 224))
    a, b = arcface.predict([small, big])
    assert float(a @ b) > 0.95


def test_lfw_same_person_scores_above_different_people(arcface, asset):
    folder = asset("benchmark-lfw-aligned-112")
    names = ["Aaron_Peirsol_0003", "Aaron_Peirsol_0004", "Aaron_Tippin_0001"]
    a, b, c = arcface.predict([decode_image((folder / f"{n}.jpg").read_bytes()) for n in names])
    same, diff1, diff2 = float(a @ b), float(a @ c), float(b @ c)
    print(f"\nLFW cosine: same person {same:.4f}; different people {diff1:.4f}, {diff2:.4f}")
    assert same > max(diff1, diff2)
    assert same == pytest.approx(0.6017, abs=0.01)  # the README's ncnn figure


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_refuses_a_file_that_is_not_a_recogniser(asset, runtime):
    with pytest.raises(ValueError, match="not an ArcFace"):
        ArcFace(ArcFaceConfig(model_path=str(asset("retinaface-det-500m")), runtime=runtime))


def test_auto_runtime_is_openvino_on_a_cpu_and_onnx_runtime_on_a_gpu(asset):
    assert resolve_runtime("auto", Placement(), RUNTIMES) == "openvino"
    assert resolve_runtime("auto", Placement(device="cuda"), RUNTIMES) == "onnxruntime"
    model = ArcFace(ArcFaceConfig(model_path=str(asset("arcface-mobilefacenet-128d"))))
    assert model.describe() == {"runtime": "OpenVINO CPU"}  # what the health entry reports
    with pytest.raises(ValueError, match="expected one of"):
        resolve_runtime("tensorrt", Placement(), RUNTIMES)
    with pytest.raises(ValueError, match="CPU only"):
        ArcFace(
            ArcFaceConfig(model_path=str(asset("arcface-mobilefacenet-128d")), runtime="openvino"),
            Placement(device="cuda"),
        )
