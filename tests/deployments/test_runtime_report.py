"""A model's health entry says what it really runs on (`runtime`), not only where Ray
placed it (`device`): a replica placed on a GPU whose ONNX Runtime has no CUDA provider
falls back to the CPU, and says so instead of claiming the GPU."""

import pytest

from deployments.serving import runtime_of
from deployments.types import Placement


@pytest.fixture(scope="module")
def detector_path(asset):
    return str(asset("retinaface-det-500m"))


def test_onnx_model_reports_the_provider_onnx_runtime_chose(detector_path):
    import onnxruntime

    from deployments.retinaface.model import RetinaFace, RetinaFaceConfig

    on_cpu = RetinaFace(RetinaFaceConfig(model_path=detector_path), Placement())
    assert runtime_of(on_cpu) == "CPUExecutionProvider"
    placed_on_gpu = RetinaFace(RetinaFaceConfig(model_path=detector_path), Placement(device="cuda"))
    want = (
        "CUDAExecutionProvider"
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        else "CPUExecutionProvider"
    )
    assert runtime_of(placed_on_gpu) == want


def test_torch_model_reports_its_torch_device(asset):
    from deployments.tddfa.model import TDDFA, TDDFAConfig

    model = TDDFA(
        TDDFAConfig(weights_path=str(asset("tddfa-mb05-120")), param_stats_path=str(asset("tddfa-param-mean-std"))),
        Placement(),
    )
    assert runtime_of(model) == "cpu"


def test_cpu_only_library_reports_no_runtime():
    class OpenCVThing:  # no `runtime`, no torch `device`: nothing to add to the health entry
        pass

    assert runtime_of(OpenCVThing()) is None
