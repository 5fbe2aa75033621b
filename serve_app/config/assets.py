"""Asset manifest, resolver and fetch command.

    resolve("lbp-detector-cascade") -> Path      (used by app builders and tests)
    python -m serve_app.config.assets fetch --set test [--mirror ../shared/assets]
    python -m serve_app.config.assets list

Lookup order for a name: $FACEGRAPH_ASSETS_DIR, then the repo's cache (.assets/).
A missing asset is an AssetMissing error naming the asset and the fetch command.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from serve_app.config.settings import REPO_ROOT, settings

log = logging.getLogger("facegraph.assets")
MANIFEST = REPO_ROOT / "assets" / "manifest.yaml"
FETCH_HINT = "python -m serve_app.config.assets fetch --set {set} [--mirror DIR]  (or scripts/setup.sh)"
# Which function writes a `generate:` entry's files, by the entry's `model`. Called as
# f(dest_dir, variant), or f(dest_dir, variant, inputs) when the entry names the assets
# it is built from (`from: {role: asset name}`; inputs = {role: that asset's path}).
GENERATORS = {
    "SegFormerParser": "deployments.segformer_parser.checkpoint:write_random_checkpoint",  # random weights
    "TDDFA": "deployments.tddfa.bfm_assemble:write_assembled_model",  # morphable model from real pieces
}


class AssetMissing(RuntimeError):
    """An asset is not in any lookup location; the message says how to fetch it."""


class AssetCorrupt(RuntimeError):
    """A fetched file does not match the manifest's size or sha256."""


@dataclass(frozen=True)
class AssetFile:
    path: str
    size: int | None
    sha256: str | None
    urls: tuple[str, ...]
    archive_member: str | None = None  # the URLs point at a zip holding this member


@dataclass(frozen=True)
class Asset:
    name: str
    sets: tuple[str, ...]
    licence: str
    files: tuple[AssetFile, ...]
    path: str  # the file itself for one-file assets, else the folder holding the files
    generate: dict | None = None
    note: str = ""
    stand_in: str | None = None  # test asset to use when this one is absent and stand-ins are allowed
    # Recognisers: the cosine similarity at or above which two faces are one person,
    # calibrated for these weights (scripts/calibrate_threshold.py), and how.
    similarity_threshold: float | None = None
    calibration: str = ""


def load_manifest(path: Path = MANIFEST) -> dict[str, Asset]:
    doc = yaml.safe_load(path.read_text())
    assets = {}
    for raw in doc["assets"]:
        files = tuple(
            AssetFile(f["path"], f.get("size"), f.get("sha256"), tuple(f.get("urls", ())), f.get("archive_member"))
            for f in raw.get("files", ())
        )
        path_ = raw.get("path") or (files[0].path if len(files) == 1 else None)
        if path_ is None:
            raise ValueError(f"asset {raw['name']}: several files need a 'path' folder")
        assets[raw["name"]] = Asset(
            name=raw["name"],
            sets=tuple(raw["sets"]),
            licence=raw["licence"],
            files=files,
            path=path_,
            generate=raw.get("generate"),
            note=raw.get("note", ""),
            stand_in=raw.get("stand_in"),
            similarity_threshold=None
            if raw.get("similarity_threshold") is None
            else float(raw["similarity_threshold"]),
            calibration=raw.get("calibration", ""),
        )
    return assets


def _roots() -> list[Path]:
    cfg = settings()
    roots = [Path(cfg.assets_dir)] if cfg.assets_dir else []
    return roots + [Path(cfg.assets_cache)]


def _present(asset: Asset, root: Path) -> bool:
    if asset.generate:
        return (root / asset.path / ".complete").exists()
    return all((root / f.path).is_file() for f in asset.files)


def resolve(name: str) -> Path:
    """Asset name -> local path (a file, or the folder of a several-file asset)."""
    assets = load_manifest()
    if name not in assets:
        raise AssetMissing(f"unknown asset {name!r}; known: {', '.join(sorted(assets))}")
    asset = assets[name]
    for root in _roots():
        if _present(asset, root):
            return root / asset.path
    where = " or ".join(str(r) for r in _roots())
    raise AssetMissing(f"asset {name!r} is not in {where}. Fetch it with: " + FETCH_HINT.format(set=asset.sets[0]))


def resolve_for_serving(name: str) -> tuple[str, Path]:
    """(asset actually used, its path) for a model config. When `name` is absent and
    FACEGRAPH_ALLOW_STAND_INS=1, its manifest `stand_in` (a test asset) is used instead,
    with a warning: how a dev box without production weights still serves. The same
    rule for the server and the batch jobs: stand-ins only when allowed (scripts/serve.sh
    allows them for the local server); otherwise the error names both ways out."""
    try:
        return name, resolve(name)
    except AssetMissing as exc:
        stand_in = load_manifest()[name].stand_in if name in load_manifest() else None
        if stand_in and not settings().allow_stand_ins:
            raise AssetMissing(
                f"{exc}; or run on its test stand-in {stand_in} (outputs not meaningful) with "
                "FACEGRAPH_ALLOW_STAND_INS=1"
            ) from None
        if not stand_in:
            raise
        log.warning("asset %s is missing; serving with its stand-in %s", name, stand_in)
        return stand_in, resolve(stand_in)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(f: AssetFile, path: Path, allow_unpinned: bool) -> None:
    size = path.stat().st_size
    if f.size is not None and size != f.size:
        raise AssetCorrupt(f"{f.path}: {size} bytes, manifest says {f.size}")
    digest = sha256_of(path)
    if f.sha256 is None:
        if not allow_unpinned:
            raise AssetCorrupt(f"{f.path}: no sha256 pinned in the manifest; re-run with --allow-unpinned to accept it")
        print(f"  UNPINNED {f.path}: sha256 {digest}, {size} bytes — record these in assets/manifest.yaml")
    elif digest != f.sha256:
        raise AssetCorrupt(f"{f.path}: sha256 {digest}, manifest says {f.sha256}")


def _fetch_file(f: AssetFile, dest: Path, mirror: Path | None, allow_unpinned: bool) -> str:
    if dest.is_file():
        try:
            _verify(f, dest, allow_unpinned)
            return "cached"
        except AssetCorrupt:
            dest.unlink()  # a stale or damaged copy: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(dir=dest.parent, prefix=".part-")[1])
    try:
        if mirror is not None and (mirror / f.path).is_file():
            shutil.copyfile(mirror / f.path, tmp)
            how = "mirror"
        else:
            if not f.urls:
                raise AssetMissing(f"{f.path}: not in the mirror and no source URL")
            last: Exception | None = None
            for url in f.urls:
                try:
                    with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
                        shutil.copyfileobj(resp, out, 1 << 20)
                    last = None
                    break
                except Exception as exc:  # try the next URL
                    last = exc
            if last is not None:
                raise AssetMissing(f"{f.path}: download failed from {', '.join(f.urls)}: {last}")
            if f.archive_member:
                _extract_member(tmp, f.archive_member)
            how = "download"
        _verify(f, tmp, allow_unpinned)
        os.replace(tmp, dest)
        return how
    finally:
        tmp.unlink(missing_ok=True)


def _extract_member(archive: Path, member: str) -> None:
    """Replace a downloaded zip by the one member the manifest entry names."""
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
        if not names:
            raise AssetMissing(f"{member} is not in the downloaded archive")
        data = zf.read(names[0])
    archive.write_bytes(data)


def generated_from(asset: Asset) -> dict[str, str]:
    """{role: asset name} a generated asset is built from (`generate.from`, a mapping of
    roles, or a list whose names are their own roles); empty for random-weight ones."""
    src = (asset.generate or {}).get("from") or {}
    return dict(src) if isinstance(src, dict) else {n: n for n in src}


def _fingerprint(asset: Asset, assets: dict[str, Asset]) -> str:
    """What the `.complete` marker records: the variant, and the pinned digests of the
    inputs, so a generated asset is rebuilt when what it is built from changes."""
    lines = [asset.generate["variant"]]
    for role, name in sorted(generated_from(asset).items()):
        dep = assets[name]
        digests = ",".join(f.sha256 or "unpinned" for f in dep.files)
        if dep.generate:
            digests = _fingerprint(dep, assets).replace("\n", ";")
        lines.append(f"{role}={name}:{digests}")
    return "\n".join(lines) + "\n"


def _generate(asset: Asset, dest: Path, inputs: dict[str, Path], fingerprint: str) -> str:
    marker = dest / ".complete"
    if marker.exists() and marker.read_text() == fingerprint:
        return "cached"
    module, _, func = GENERATORS[asset.generate["model"]].partition(":")
    shutil.rmtree(dest, ignore_errors=True)
    generator = getattr(importlib.import_module(module), func)
    if inputs:
        generator(dest, asset.generate["variant"], inputs)
    else:
        generator(dest, asset.generate["variant"])
    marker.write_text(fingerprint)
    return "generated"


def fetch(
    names: list[str], mirror: Path | None = None, dest_root: Path | None = None, allow_unpinned: bool = False
) -> None:
    """Fill dest_root (default: the cache) with the named assets; a generated asset's
    inputs (`generate.from`) are fetched first, into the same place."""
    assets = load_manifest()
    root = dest_root or Path(settings().assets_cache)
    outcome: dict[str, Exception | None] = {}  # each asset once per call, inputs included

    def fetch_one(name: str, chain: tuple[str, ...] = ()) -> None:
        if name in outcome:
            if outcome[name] is not None:
                raise AssetMissing(f"{name} was not fetched: {outcome[name]}")
            return
        if name in chain:
            raise AssetMissing(f"generate.from cycle: {' -> '.join((*chain, name))}")
        if name not in assets:
            raise AssetMissing(f"unknown asset {name!r} (named in {chain[-1] if chain else 'the command'})")
        asset = assets[name]
        try:
            if asset.generate:
                inputs = {}
                for role, dep in generated_from(asset).items():
                    fetch_one(dep, (*chain, name))
                    inputs[role] = root / assets[dep].path
                print(f"{name}: {_generate(asset, root / asset.path, inputs, _fingerprint(asset, assets))}")
            else:
                hows = {_fetch_file(f, root / f.path, mirror, allow_unpinned) for f in asset.files}
                print(f"{name}: {'/'.join(sorted(hows))} ({len(asset.files)} file(s))")
        except (AssetMissing, AssetCorrupt) as exc:
            outcome[name] = exc
            raise
        outcome[name] = None

    failed = []
    for name in names:
        try:
            fetch_one(name)
        except (AssetMissing, AssetCorrupt) as exc:  # report every failure, not just the first
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            failed.append(name)
    if failed:
        raise AssetMissing(f"{len(failed)} asset(s) not fetched: {', '.join(failed)}")


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter  # the module docstring's layout kept in --help
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name}", description=__doc__, formatter_class=raw)
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fill the cache, verifying sha256")
    f.add_argument("names", nargs="*", help="asset names (default: every asset of --set)")
    f.add_argument("--set", default="test", help="production | test | bench | all")
    f.add_argument("--mirror", type=Path, help="copy from this directory instead of downloading")
    f.add_argument("--dest", type=Path, help="cache directory (default: $FACEGRAPH_ASSETS_CACHE or .assets/)")
    f.add_argument(
        "--allow-unpinned",
        action="store_true",
        help="accept files whose sha256 is not yet in the manifest (prints their digests)",
    )
    sub.add_parser("list", help="name, sets, licence of every asset")
    args = parser.parse_args(argv)
    assets = load_manifest()
    if args.cmd == "list":
        for a in assets.values():
            print(f"{a.name:32} {','.join(a.sets):22} {a.licence}")
        return 0
    names = args.names or [a.name for a in assets.values() if args.set == "all" or args.set in a.sets]
    try:
        fetch(names, args.mirror, args.dest, args.allow_unpinned)
    except (AssetMissing, AssetCorrupt) as exc:
        print(f"fetch failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
