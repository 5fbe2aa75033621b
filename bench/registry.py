"""The one list of benchmark scripts, read by `python -m bench` and `facegraph bench`.

A script is a module of bench/perf, bench/faults or bench/quality with a top-level
main(argv) function; its name is the module's name and its summary the first sentence
of its docstring. Modules beside them without main() are their helpers (perf/baselines.py).
Found by reading the files, not importing them: listing loads no model library."""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

GROUPS = ("perf", "faults", "quality")  # throughput and latency; failures and overload; output quality


@dataclass(frozen=True)
class Script:
    name: str  # python -m bench <name>
    group: str
    module: str  # bench.<group>.<name>, imported only to run it
    summary: str


def scripts() -> dict[str, Script]:
    """{name: Script}, group by group, names sorted within a group."""
    root = Path(__file__).parent
    found: dict[str, Script] = {}
    for group in GROUPS:
        for path in sorted((root / group).glob("*.py")):
            tree = ast.parse(path.read_text())
            if not any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
                continue
            if path.stem in found:
                raise RuntimeError(f"two benchmarks named {path.stem!r}: {found[path.stem].module}, bench.{group}")
            found[path.stem] = Script(path.stem, group, f"bench.{group}.{path.stem}", summary(tree))
    return found


def summary(tree: ast.Module, width: int = 90) -> str:
    """The docstring's first sentence, on one line, cut to `width`."""
    paragraph = " ".join((ast.get_docstring(tree) or "").split("\n\n")[0].split())
    sentence = re.split(r"(?<=\.)\s", paragraph)[0].rstrip(".:")
    return textwrap.shorten(sentence, width, placeholder=" ...")
