"""What the fault and soak scripts share beyond the harness: their command line's common
options and the figures file they write."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def argument_parser(doc: str, clients_help: str = "closed-loop clients") -> argparse.ArgumentParser:
    """The script's docstring as the description, and the two options every rehearsal
    takes (--clients, --json)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=4, help=clients_help)
    p.add_argument("--json", help="write the figures here")
    return p


def write_json(path: str | None, figures) -> None:
    if path:
        Path(path).write_text(json.dumps(figures, indent=1))
