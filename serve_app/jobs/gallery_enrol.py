"""Writing a batch job's people into the people gallery (FaceGallery), on the driver,
after every row is in: `facegraph batch people-enrol` (one folder per person) and
`facegraph batch face-extract --enrol` (one person per unique face found).

The job opens the same store the server uses (the FaceGallery block of --serve-config:
SQLite in FACEGRAPH_DATA_DIR, or PostgreSQL from FACEGRAPH_DATABASE_URL); running
servers pick the new people up from the store's change sequence before their next
search.

Resumable: <output>/enrolled.json maps every face the job has enrolled (a stable key:
the input path, or the face id of results.jsonl) to its person id, written after each
person's transaction. A re-run enrols only faces not in it: a group with a face
already enrolled gets its new faces added to that person, a group with none becomes a
new person. A person erased from the gallery since is not brought back (the erasure
stands); their new faces are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serve_app.jobs.runner import ConfigError, model_blocks, write_atomic

LEDGER_FILE = "enrolled.json"
GALLERY = "FaceGallery"


@dataclass
class Group:
    """Faces of one person: `keys` (ledger keys), their embeddings and headshot files."""

    name: str | None
    metadata: dict
    keys: list[str] = field(default_factory=list)
    embeddings: list[list[float]] = field(default_factory=list)
    crops: list[Path] = field(default_factory=list)

    def add(self, key: str, embedding: list[float], crop: Path) -> None:
        self.keys.append(key)
        self.embeddings.append(embedding)
        self.crops.append(crop)


@dataclass
class Enrolled:
    people_new: int = 0
    people_grown: int = 0
    faces: int = 0
    erased_skipped: int = 0


def gallery_options(args: argparse.Namespace) -> dict:
    """The gallery model (class, config) and the recogniser weights the job's faces come
    from, resolved on the driver before any work: a bad FaceGallery block stops the job
    at once."""
    from serve_app.config.model_tier import model_config, served_weights
    from serve_app.pipelines.people import SPEC

    blocks, recogniser = model_blocks(args), SPEC.models["embed"]
    try:
        cls, cfg, _ = model_config(GALLERY, blocks.get(GALLERY))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{GALLERY}: its config in {args.serve_config}: {exc}") from None
    return {"gallery": (cls, cfg), "weights": served_weights(recogniser, blocks.get(recogniser))}


def load_ledger(output: Path) -> dict[str, str]:
    path = output / LEDGER_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def enrol_groups(groups: list[Group], output: Path, opts: dict, actor: str) -> Enrolled:
    """Each group's faces not yet in the ledger into the gallery (see the module doc)."""
    from deployments.face_gallery import errors as gallery_errors
    from deployments.face_gallery.model import AddFaces, Enrol

    ledger, done = load_ledger(output), Enrolled()
    todo = [g for g in groups if any(k not in ledger for k in g.keys)]
    if not todo:
        return done
    cls, cfg = opts["gallery"]
    weights = opts["weights"]
    try:
        gallery = cls(cfg)
    except gallery_errors.GalleryError as exc:
        raise ConfigError(f"the people gallery: {exc.message}") from None
    try:
        for group in todo:
            new = [i for i, k in enumerate(group.keys) if k not in ledger]
            embeddings = np.asarray([group.embeddings[i] for i in new], np.float32)
            crops = [group.crops[i].read_bytes() for i in new]
            known = next((ledger[k] for k in group.keys if k in ledger), None)
            if known is None:
                item = Enrol(embeddings, weights, group.name, group.metadata, crops, actor)
            else:
                item = AddFaces(known, embeddings, weights, crops, actor)
            try:
                record = gallery_errors.unwrap(gallery.predict([item])[0])
            except gallery_errors.PersonNotFound:
                done.erased_skipped += len(new)
                continue
            except gallery_errors.GalleryError as exc:  # store down, other weights: stop, a re-run resumes
                raise ConfigError(f"the people gallery refused {group.name or 'a person'}: {exc.message}") from None
            for i in new:
                ledger[group.keys[i]] = record.person_id
            write_atomic(output / LEDGER_FILE, (json.dumps(ledger, indent=1) + "\n").encode())
            done.faces += len(new)
            if known is None:
                done.people_new += 1
            else:
                done.people_grown += 1
    finally:
        gallery.close()
    return done


def summary(job: str, done: Enrolled) -> str:
    line = (
        f"{job}: {done.people_new} people enrolled, {done.people_grown} given more faces, "
        f"{done.faces} faces written to the people gallery"
    )
    if done.erased_skipped:
        line += f"; {done.erased_skipped} faces of people erased since were skipped"
    return line
