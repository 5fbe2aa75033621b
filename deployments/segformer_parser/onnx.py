"""The face parser on ONNX Runtime: the same network SegFormerParser loads (a
transformers SegFormer or the small UNet, `segformer_parser.load_parser_net`) exported
once to ONNX, optionally with dynamic int8 quantisation, and run by an ONNX Runtime
session. Chosen per deployment by SegFormerParserConfig.runtime:

  torch      the checkpoint as it is (no export);
  onnx       fp32 export: the same numbers as torch (to float rounding), ONNX
             Runtime's fused kernels;
  onnx-int8  the export with MatMul / Gemm weights in int8 and activations quantised
             on the fly (onnxruntime.quantization.quantize_dynamic): the CPU path
             (the small UNet has no MatMul: its int8 graph is its fp32 one);
  auto       onnx-int8 on a CPU replica, torch on a GPU one (serve_config.yaml's
             choice: the same file serves both, serve_config.gpu.yaml included;
             model.py's RUNTIMES, resolved by deployments.runtime.resolve_runtime).

The exported graph returns softmax probabilities (what the torch path computes after
its forward), batch axis dynamic. Exports are cached: a file per (checkpoint contents,
runtime, torch / onnx / onnxruntime versions), written atomically, so replicas that
start together export at most once each and later starts load the file
(`python -m deployments.segformer_parser.onnx CKPT --runtime onnx-int8` fills the cache ahead).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from deployments.runtime import active_provider, providers, session_options
from deployments.types import Placement

log = logging.getLogger("facegraph.parser_onnx")

OPSET = 17
EXPORT_FORMAT = 2  # bump when the exported graph changes: old cache files are then ignored (2: folded SegFormer head)
# Dynamic quantisation of these ops only. SegFormer's compute is MatMuls (attention,
# Mix-FFN, decode-head MLPs); ConvInteger (the quantised Conv) runs slower than the
# fp32 Conv on ONNX Runtime's CPU provider, so convolutions stay fp32.
INT8_OPS = ("MatMul", "Gemm")
CACHE_ENV = "FACEGRAPH_ONNX_CACHE"  # overrides where exports are kept


def checkpoint_key(ckpt: Path) -> str:
    """Identifies a checkpoint folder's contents cheaply: every file's name, size and
    modification time (a re-generated or re-fetched checkpoint gets a new key)."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(ckpt).iterdir() if p.is_file() and not p.name.startswith(".")):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def cache_dir(configured: str | None = None) -> Path:
    """Where exports live: the configured folder, else $FACEGRAPH_ONNX_CACHE, else
    ~/.cache/facegraph/parser_onnx (never inside the checkpoint: it may be a shared,
    read-only mirror)."""
    if configured:
        return Path(configured)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "facegraph" / "parser_onnx"


def export_path(ckpt: Path, runtime: str, configured_cache: str | None = None) -> Path:
    import onnx
    import onnxruntime
    import torch

    versions = f"{torch.__version__}-{onnx.__version__}-{onnxruntime.__version__}-f{EXPORT_FORMAT}"
    tag = hashlib.sha256(f"{checkpoint_key(ckpt)}|{versions}".encode()).hexdigest()[:16]
    return cache_dir(configured_cache) / f"parser-{runtime}-{tag}.onnx"


def ensure_export(ckpt: Path, runtime: str, configured_cache: str | None = None) -> Path:
    """The exported graph for `runtime` ("onnx" | "onnx-int8"), exported (and
    quantised) now if the cache does not hold it yet."""
    if runtime not in ("onnx", "onnx-int8"):
        raise ValueError(f"only the onnx runtimes are exported, not {runtime!r}")
    target = export_path(ckpt, runtime, configured_cache)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fp32 = export_path(ckpt, "onnx", configured_cache)
    if not fp32.is_file():
        from deployments.segformer_parser.checkpoint import load_parser_net

        log.info("exporting the parser in %s to ONNX (%s)", ckpt, fp32)
        net = load_parser_net(Path(ckpt))
        _atomic_write(fp32, lambda tmp: export_onnx(net.module, net.input_hw or (256, 256), tmp))
        del net
    if runtime == "onnx-int8":
        log.info("quantising %s to int8 (%s)", fp32, target)
        _atomic_write(target, lambda tmp: quantize_int8(fp32, tmp))
    return target


def _atomic_write(target: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a replica
    starting beside another never loads a half-written graph."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_onnx(module, input_hw: tuple[int, int], path: Path) -> None:
    """pixels [N,3,H,W] float32 -> probabilities [N,labels,h,w] (softmax over labels)."""
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, pixels):
            return self.net(pixels).float().softmax(dim=1)

    wrapped = Probabilities(module).eval()
    example = torch.zeros(1, 3, *input_hw)
    # The TorchScript exporter (dynamo=False): it needs no onnxscript, and traces both
    # networks (SegFormer's attention, the UNet) into plain opset-17 ops.
    # (transformers' attention warns that `is_causal` is traced as a constant: it is
    # False for SegFormer, whatever the input.)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["pixels"],
            output_names=["probs"],
            dynamic_axes={"pixels": {0: "batch"}, "probs": {0: "batch"}},
        )


def quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(INT8_OPS), weight_type=QuantType.QInt8)


class OnnxParserNet:
    """An exported parser: pixels [N,3,H,W] float32 -> probabilities [N,labels,h,w]."""

    def __init__(self, path: Path, placement: Placement):
        import onnxruntime

        opts = session_options(placement)
        opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No CPU memory arena: with a parser's large activations and batches of varying
        # size the arena only grew (SegFormer-B5 int8, batch 8 then 8 again: RSS 6.8 GB
        # then 10.3 GB, killed by the OOM killer in `bench all`); without it RSS stays at
        # 0.7 GB, at the same speed within noise.
        opts.enable_cpu_mem_arena = False
        self.session = onnxruntime.InferenceSession(str(path), opts, providers=providers(placement))
        self.input_name = self.session.get_inputs()[0].name
        self.provider = active_provider(self.session)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: pixels})[0]


def main(argv: list[str] | None = None) -> int:
    """Fill the export cache ahead of serving (a cold start then only loads the file)."""
    import argparse

    ap = argparse.ArgumentParser(description="Export a face-parser checkpoint folder to ONNX (cached).")
    ap.add_argument("checkpoint_dir")
    ap.add_argument("--runtime", default="onnx-int8", choices=("onnx", "onnx-int8"))
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    print(ensure_export(Path(args.checkpoint_dir), args.runtime, args.cache_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
