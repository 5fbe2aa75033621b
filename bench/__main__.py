"""usage: python -m bench --list | python -m bench NAME [options]   (NAME --help: its options)"""

from __future__ import annotations

import importlib
import sys

from bench.registry import scripts


def main(argv: list[str]) -> int:
    found = scripts()
    if not argv or argv[0] in ("--list", "-h", "--help"):
        if argv[:1] != ["--list"]:
            print(__doc__ + "\n")
        for script in found.values():
            print(f"{script.name:22s} {script.group:7s} {script.summary}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in found:
        print(f"python -m bench: no benchmark {name!r}; `python -m bench --list` names them", file=sys.stderr)
        return 2
    sys.argv[0] = f"python -m bench {name}"  # argparse's prog in the script's usage lines
    return importlib.import_module(found[name].module).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
