"""`python -m bench all [options]`: every comparison in one run (bench/bench_all.py).
`python -m bench --list`: the other benchmark scripts, each run as `python bench/<file>.py`."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["all"]:
        from bench.bench_all import main as run_all

        return run_all(argv[1:])
    from pathlib import Path

    print(__doc__)
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if 'if __name__ == "__main__"' in path.read_text() and path.name != "__main__.py":
            print(f"  bench/{path.name}")
    return 0 if argv[:1] in ([], ["--list"]) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
