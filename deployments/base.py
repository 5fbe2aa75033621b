"""The model contract: what every model class (deployments/<model>/model.py) is, and all
that the serving adapter (deployments/serving.py), the batch jobs and the benchmarks
rely on.

    class ArcFace(Model):
        def __init__(self, cfg: ArcFaceConfig, placement: Placement = Placement()): ...
        def predict(self, items: list) -> list: ...    # list in, list out: same length, same order
        def item_size(item) -> int: ...                 # work units in one item (default 1)
        def describe(self) -> dict[str, str | None]: ...  # what health routes show
        def close(self) -> None: ...                    # release sessions and memory (default: nothing)

Construction is the only place that loads weights, opens sessions and picks the device
and threads, from the config (file paths already resolved) and the placement (where Ray
put the replica: serving.runtime_placement; a test or a benchmark names its own). A model
with several runtimes or backends resolves `auto` with deployments.runtime.resolve_runtime.
`predict` keeps no state from one call to the next; "nothing found" is an empty list.

`TorchModel` is the base of models whose network runs on torch. It owns placement and
inference mode, in one place, as transformers' `Pipeline.forward` does: subclasses write
`preprocess` (items -> numpy, pure), `_forward` (tensors on `self.device` in, tensors out;
the only model call) and `postprocess` (numpy -> results, pure), and never place tensors
or enter inference mode themselves.

Nothing heavy is imported here: torch loads only in the helpers that need it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from deployments.runtime import inference, prepare, to_device, to_host, torch_device
from deployments.types import Placement


class Model(ABC):
    """One model, usable with no Ray at all. See the module docstring for the contract."""

    def __init__(self, cfg: Any, placement: Placement = Placement()):
        self.cfg = cfg
        self.placement = placement

    @abstractmethod
    def predict(self, items: list) -> list:
        """Results for a batch of items: one per item, in order."""

    @staticmethod
    def item_size(item: Any) -> int:
        """How much work one item is (faces in a stack, ROIs in a list): batches are
        capped in this unit, not in calls. A static method in every model here (the
        item alone says its size); an override may use the instance."""
        return 1

    def describe(self) -> dict[str, str | None]:
        """What health routes show beside the weights and the placement: `runtime`, what
        really runs (the torch device, the execution provider ONNX Runtime kept; None for
        libraries that choose for themselves, e.g. MediaPipe, OpenCV), and `backend`
        where a model has several. Entries that are None are left out of the health entry."""
        return {"runtime": None}

    def close(self) -> None:  # noqa: B027 - a default, not abstract: most models hold nothing to release
        """Release sessions and memory; the model is not used after this."""


class TorchModel(Model):
    """A model whose network runs on torch: placed on the device of its placement (CUDA
    when Ray gave the replica a GPU, else the CPU with the replica's threads), every
    forward pass under inference mode.

    `predict` is preprocess -> forward -> postprocess; a model that splits a batch into
    several forward passes overrides `predict` and calls `forward` for each."""

    def __init__(self, cfg: Any, placement: Placement = Placement(), *, on_torch: bool = True):
        super().__init__(cfg, placement)
        # on_torch=False: a model that runs an export instead (SegFormerParser on ONNX
        # Runtime) places no torch device and sets no torch threads.
        self.device = torch_device(placement) if on_torch else None

    def place(self, module):
        """A network ready to serve: on this model's device, in eval mode, no gradients."""
        return prepare(module, self.device)

    def predict(self, items: list) -> list:
        if not items:
            return []
        return self.postprocess(self.forward(self.preprocess(items)), items)

    def forward(self, inputs: Any) -> Any:
        """`_forward` on this model's device under inference mode: numpy arrays in
        `inputs` (also inside tuples, lists and dicts) arrive as tensors on the device,
        and the tensors it returns come back as numpy arrays on the CPU."""
        with inference():
            return to_host(self._forward(to_device(inputs, self.device)))

    @abstractmethod
    def preprocess(self, items: list) -> Any:
        """Items -> the network's inputs as numpy arrays (pure)."""

    @abstractmethod
    def _forward(self, inputs: Any) -> Any:
        """The network call: tensors on `self.device` in, tensors out."""

    @abstractmethod
    def postprocess(self, outputs: Any, items: list) -> list:
        """The network's outputs (numpy) -> one result per item (pure)."""

    def describe(self) -> dict[str, str | None]:
        return {"runtime": str(self.device)}
