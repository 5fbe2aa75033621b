"""Offline batch jobs over a folder of images, on Ray Data, with the same model classes
and the same pipeline glue as the HTTP endpoints.

    python -m serve_app.jobs.runner face-mask --input DIR --output DIR [job options]
    python -m serve_app.jobs.runner --help           (lists the jobs)

A job is a pipeline's spec (its parameters become the job's options; its models are
built from the `models` block of --serve-config, the same file the server uses) plus
how to write one input's outputs.

Every file under --input (recursive, hidden files skipped) becomes one row of
<output>/results.jsonl: {"path", "error", ...job fields}. A corrupt or non-image file
is an error row, never a crashed job. Re-running skips inputs whose row has no error
and whose outputs still exist; failed inputs are tried again.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_app.config import spec as specs
from serve_app.config.settings import REPO_ROOT
from serve_app.errors import ApiError
from serve_app.jobs.spelling import NOTE as SPELLING_NOTE
from serve_app.jobs.spelling import JobHelpFormatter, JobParser

log = logging.getLogger("facegraph.batch")
RESULTS_FILE = "results.jsonl"
Models = dict[str, Callable[[Any], Awaitable[Any]]]


@dataclass(frozen=True)
class BatchJob:
    """How a pipeline plugs into the runner.

    spec: the pipeline's spec; its parameters are the job's options and arrive, built
        and validated, as options["params"]; its models are built once per actor.
    process(path, models, options) -> dict of job fields for one input; raise
        ApiError (or anything) to make it an error row. `path` is absolute; write
        outputs under options["output"] and list them in an "outputs" field.
    add_arguments / options(args) -> dict: the job's own options beyond the pipeline's
        parameters (which images to write, the SAM2 service); must pickle.
    resolve(params, args) -> params: the values the pipeline leaves to its caller (the
        recogniser's similarity threshold), resolved once on the driver before any work.
    finalize(rows, output, options): optional dataset-wide step after all rows are in
        (e.g. de-duplication across the whole dataset); `options` as process got them.
    done(row, options) -> bool: optional; whether an earlier run's row (without error,
        outputs on disk) still answers this run's options; without it, it always does.
    """

    spec: specs.PipelineSpec
    help: str
    process: Callable[[Path, Models, dict], Awaitable[dict]]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    options: Callable[[argparse.Namespace], dict] | None = None
    resolve: Callable[[specs.Params, argparse.Namespace], specs.Params] | None = None
    finalize: Callable[[list[dict], Path, dict], None] | None = None
    done: Callable[[dict, dict], bool] | None = None
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The job's command name: the pipeline's, dashed (face_extract -> face-extract)."""
        return self.spec.name.replace("_", "-")


class ConfigError(Exception):
    """A configuration mistake (a missing asset, a bad serve config or option): the job
    stops before any work with this one line, never a traceback (main)."""


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A `host:port` --address nothing listens on: ConfigError at once. (ray.init retries
    an unreachable GCS for a minute or more, printing warnings.) None, "auto" and ray://
    addresses are left to ray.init."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at --address {address} ({exc.strerror or type(exc).__name__}): "
            "is it running? (`ray status` on its head node shows the address; leave --address out to run locally)"
        ) from None


def model_blocks(args: argparse.Namespace) -> dict:
    """{model name: ModelArgs} from the serve config's `models` block, with any
    --asset MODEL=ASSET on top; ConfigError naming the problem otherwise."""
    import yaml
    from pydantic import ValidationError

    from serve_app.config.model_tier import MODELS, ModelArgs, serve_config_models

    where = f"--serve-config {args.serve_config}"
    try:
        blocks = serve_config_models(args.serve_config)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(exc).split())}") from None
    except ValidationError as exc:
        raise ConfigError(f"{where}: a model block is wrong: {specs.validation_message(exc)}") from None
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for override in args.asset or []:
        name, _, asset = override.partition("=")
        if not asset:
            raise ConfigError(f"--asset takes MODEL=ASSET, not {override!r}")
        if name not in MODELS:
            raise ConfigError(f"--asset {override}: no model {name!r}; the models are {', '.join(MODELS)}")
        blocks[name] = (blocks.get(name) or ModelArgs()).model_copy(update={"asset": asset})
    return blocks


WEIGHTS_FILE = "weights.json"  # {model: the weights it used}: every output names its weights


def job_models(job: BatchJob, args: argparse.Namespace) -> tuple[dict[str, tuple[type, Any]], dict[str, str]]:
    """({pipeline key: (model class, config)}, {model: weights}) from the serve config's
    `models` block, with any --asset MODEL=ASSET on top; the weights are a stand-in's own
    name where one is used, and are printed."""
    from serve_app.config.assets import AssetCorrupt, AssetMissing
    from serve_app.config.model_tier import model_config

    blocks = model_blocks(args)
    models, used = {}, {}
    for key, name in job.spec.models.items():
        try:
            cls, cfg, weights = model_config(name, blocks.get(name))
        except (AssetMissing, AssetCorrupt) as exc:
            raise ConfigError(f"{name}: {exc}") from None
        except (TypeError, ValueError) as exc:  # a config field the model does not have, or a bad value
            raise ConfigError(f"{name}: its config in {args.serve_config}: {exc}") from None
        print(f"  {name}: {weights}")
        models[key] = (cls, cfg)
        used[name] = weights
    return models, used


def output_path(output: Path, rel: str, suffix: str) -> Path:
    """<output>/<rel>.<suffix>: mirrors the input tree; keeps the source extension so
    a.jpg and a.png never collide."""
    path = output / f"{rel}.{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


async def _run_one(row: dict, models: Models, process, options: dict) -> dict:
    """Wraps a job's process so every input yields exactly one row. The job's fields
    travel as one JSON string: Ray Data infers an Arrow schema per block, and nested
    per-face lists with nulls in some rows and values in others do not unify across
    blocks; one string column always does."""
    rel = row["rel"]
    try:
        fields = await process(Path(row["path"]), models, options)
        return {"path": rel, "error": None, "fields": json.dumps(fields)}
    except ApiError as exc:
        return {"path": rel, "error": f"{exc.code}: {exc.message}", "fields": "{}"}
    except Exception as exc:  # a bug or model failure must not kill the job
        log.error("%s failed: %s", rel, traceback.format_exc())
        return {"path": rel, "error": f"{type(exc).__name__}: {exc}", "fields": "{}"}


def write_atomic(path: Path, data: bytes) -> None:
    """Write under a temporary name, then rename: a killed job never leaves a
    half-written file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def end_last_line(path: Path) -> None:
    """A run killed mid-write can leave a half-written last line in results.jsonl:
    end it, so the next run's first row starts on a line of its own (load_results
    skips the broken one and the input is run again)."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def input_root(given: Path) -> tuple[Path, list[str]]:
    """(root folder, inputs relative to it): every file under a folder, or one file."""
    given = given.resolve()
    if given.is_file():
        return given.parent, [given.name]
    if not given.is_dir():
        raise SystemExit(f"error: --input {given} is neither a folder nor a file")
    return given, list_inputs(given)


def list_inputs(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def load_results(output: Path) -> dict[str, dict]:
    """Latest row per input path from an earlier (possibly interrupted) run."""
    rows: dict[str, dict] = {}
    path = output / RESULTS_FILE
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                rows[row["path"]] = row
            except (ValueError, KeyError):
                continue  # a half-written last line from a killed run
    return rows


def _is_done(row: dict | None, output: Path) -> bool:
    if row is None or row.get("error"):
        return False
    outputs = row.get("outputs") or {}
    return all((output / p).exists() for p in outputs.values() if p)


def run_job(job: BatchJob, args: argparse.Namespace) -> list[dict]:
    import ray

    from deployments.serving import PipelineWorker

    (input_dir, inputs), output = input_root(Path(args.input)), Path(args.output).resolve()
    # Options first: a bad value stops the job before any work, with one line.
    params = specs.from_arguments(job.spec.params, args)
    options = dict(
        job.options(args) if job.options else {},
        params=job.resolve(params, args) if job.resolve else params,
        input=str(input_dir),
        output=str(output),
    )
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output {output}: {exc.strerror or exc}") from None
    previous = load_results(output)
    todo = [
        rel
        for rel in inputs
        if not (_is_done(previous.get(rel), output) and (job.done is None or job.done(previous[rel], options)))
    ]
    print(f"{job.name}: {len(inputs)} inputs, {len(inputs) - len(todo)} already done, {len(todo)} to run")

    if todo:
        models, weights = job_models(job, args)  # before Ray starts: a missing asset is one line, at once
        # Before any work: files made from stand-in weights are never mistaken for real ones.
        write_atomic(output / WEIGHTS_FILE, (json.dumps(weights, indent=2) + "\n").encode())
        if not ray.is_initialized():
            check_reachable(args.address)
            try:
                ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(
                    f"cannot start or reach the Ray cluster (--address {args.address}): {' '.join(str(exc).split())}"
                ) from None
        process = functools.partial(_run_one, process=job.process, options=options)
        ds = ray.data.from_items([{"path": str(input_dir / rel), "rel": rel} for rel in todo])
        ds = ds.map_batches(
            PipelineWorker,
            fn_constructor_kwargs={"models": models, "process": process},
            batch_size=args.batch_size,
            compute=ray.data.ActorPoolStrategy(size=args.workers),
            num_cpus=args.cpus_per_worker,
        )
        end_last_line(output / RESULTS_FILE)
        with open(output / RESULTS_FILE, "a") as results, progress(len(todo)) as bar:
            # Streamed: each row is on disk as soon as it is done, so a killed run resumes.
            try:
                for row in ds.iter_rows():
                    record = {"path": row["path"], "error": row["error"], **json.loads(row["fields"])}
                    results.write(json.dumps(record) + "\n")
                    results.flush()
                    previous[record["path"]] = record
                    bar.update(1)
                    if record["error"] and args.stop_on_error:
                        print(f"{job.name}: stopped at the first error ({record['path']}: {record['error']})")
                        break
            except ray.exceptions.RayActorError as exc:
                # A worker that cannot build its models (a config value a model refuses,
                # unreadable weights) or dies: rows so far are kept; a re-run resumes.
                cause = next((line.strip() for line in reversed(str(exc).splitlines()) if line.strip()), repr(exc))
                raise ConfigError(
                    f"a job worker failed: {cause} (details in the Ray worker logs; a re-run "
                    "resumes where this one stopped)"
                ) from None

    rows = [previous[rel] for rel in inputs if rel in previous]
    # Compact: one row per input, in input order; atomic, so a kill here loses nothing.
    write_atomic(output / RESULTS_FILE, "".join(json.dumps(r) + "\n" for r in rows).encode())
    if job.finalize is not None:
        job.finalize(rows, output, options)
    failed = sum(1 for r in rows if r.get("error"))
    print(f"{job.name}: {len(rows) - failed} ok, {failed} errors -> {output / RESULTS_FILE}")
    return rows


class _Lines:
    """Progress as a line every 10 inputs, where no terminal shows a bar (logs, CI)."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        if self.done % 10 == 0 or self.done == self.total:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            print(f"  {self.done}/{self.total} ({rate:.1f} images/s)", flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def progress(total: int):
    """A tqdm bar on a terminal, progress lines elsewhere."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit="image", desc="  progress")
    return _Lines(total)


def jobs() -> dict[str, BatchJob]:
    """Every registered job by name and alias (imported lazily: each pulls its models)."""
    import importlib
    import pkgutil

    import serve_app.jobs as pkg

    found = {}
    for mod in pkgutil.iter_modules(pkg.__path__):
        job = getattr(importlib.import_module(f"serve_app.jobs.{mod.name}"), "JOB", None)
        if isinstance(job, BatchJob):
            for name in (job.name, *job.aliases):
                found[name] = job
    return found


def build_parser(registry: dict[str, BatchJob]) -> argparse.ArgumentParser:
    """The runner's command line: one subcommand per job and alias."""
    parser = argparse.ArgumentParser(
        prog="python -m serve_app.jobs.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Every job's parser takes the seed tools' spellings too (serve_app/jobs/spelling.py).
    sub = parser.add_subparsers(dest="job", required=True, parser_class=JobParser)
    for name, job in sorted(registry.items()):
        p = sub.add_parser(
            name,
            help=job.help + (" (alias)" if name != job.name else ""),
            description=job.help,
            epilog=SPELLING_NOTE,
            formatter_class=JobHelpFormatter,
        )
        p.add_argument("--input", required=True, help="folder of images (recursive)")
        p.add_argument("--output", required=True, help="folder for outputs and results.jsonl")
        p.add_argument("--workers", type=int, default=1, help="Ray Data actors, each holding the job's models")
        p.add_argument("--cpus-per-worker", type=float, default=1.0)
        p.add_argument("--batch-size", type=int, default=8, help="images per block; models batch across them")
        p.add_argument("--address", default=None, help="Ray cluster address (default: start or find a local one)")
        p.add_argument(
            "--stop-on-error",
            action="store_true",
            help="stop at the first input that fails (exit status 1); default: record it and go on",
        )
        p.add_argument(
            "--serve-config",
            default=str(REPO_ROOT / "serve_config.yaml"),
            help="serve config whose `models` block configures the models [default: %(default)s]",
        )
        p.add_argument(
            "--asset",
            action="append",
            metavar="MODEL=ASSET",
            help="use other weights for a model, e.g. SegFormerParser=segformer-parser-tiny (repeatable)",
        )
        specs.add_arguments(p.add_argument_group("pipeline parameters"), job.spec.params)
        if job.add_arguments:
            job.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    registry = jobs()
    parser = build_parser(registry)
    args = parser.parse_args(argv)
    from serve_app.config.assets import AssetCorrupt, AssetMissing

    try:
        rows = run_job(registry[args.job], args)
    except (ConfigError, AssetMissing, AssetCorrupt) as exc:
        raise SystemExit(f"error: {exc}") from None
    return 1 if args.stop_on_error and any(r.get("error") for r in rows) else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    # Run the imported module's main, not this __main__ copy, so BatchJob is one class.
    from serve_app.jobs.runner import main as _main

    sys.exit(_main())
