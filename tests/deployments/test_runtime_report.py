"""A model's health entry says what it really runs on (`runtime`, from the model's
describe()), not only where Ray placed it (`device`): a replica placed on a GPU whose ONNX
Runtime has no CUDA provider falls back to the CPU, and says so instead of claiming the GPU."""

import pytest

from deployments.serving import health_entry
from deployments.types import Placement


@pytest.fixture(scope="module")
def detector_path(asset):
    return str(asset("retinaface-det-500m"))


def test_onnx_model_reports_the_provider_onnx_runtime_chose(detector_path):
    import onnxruntime

    from deployments.retinaface.model import RetinaFace, RetinaFaceConfig

    on_cpu = RetinaFace(RetinaFaceConfig(model_path=detector_path), Placement())
    assert on_cpu.describe()["runtime"] == "CPUExecutionProvider"
    placed_on_gpu = RetinaFace(RetinaFaceConfig(model_path=detector_path), Placement(device="cuda"))
    want = (
        "CUDAExecutionProvider"
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        else "CPUExecutionProvider"
    )
    assert placed_on_gpu.describe()["runtime"] == want
    assert health_entry(placed_on_gpu, "det", Placement(device="cuda")) == {
        "weights": "det",
        "device": "cuda",
        "runtime": want,
    }


def test_torch_model_reports_its_torch_device(asset):
    from deployments.tddfa.model import TDDFA, TDDFAConfig

    model = TDDFA(
        TDDFAConfig(weights_path=str(asset("tddfa-mb05-120")), param_stats_path=str(asset("tddfa-param-mean-std"))),
        Placement(),
    )
    assert model.describe()["runtime"] == "cpu"


def test_cpu_only_library_reports_no_runtime(asset):
    """OpenCV picks for itself: its describe() knows no runtime, and the health entry
    leaves the key out rather than showing a null."""
    from deployments.lbp_detector.model import LBPDetector, LBPDetectorConfig

    model = LBPDetector(LBPDetectorConfig(cascade_path=str(asset("lbp-detector-cascade"))))
    assert model.describe()["runtime"] is None
    assert health_entry(model, "lbp", Placement()) == {"weights": "lbp", "device": "cpu"}
