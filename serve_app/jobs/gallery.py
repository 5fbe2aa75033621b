"""`facegraph gallery reembed` (python -m serve_app.jobs.gallery reembed): rebuild the
people gallery's embeddings with the recogniser the serve config names now.

Embeddings of two recognisers cannot be compared, so the gallery refuses to mix them
(409 weights_mismatch). After a change of ArcFace weights, this re-embeds every face
from the aligned crop the gallery kept (FaceGallery `keep_crops: true`; a crop is the
160x160 headshot of the same 5-point alignment, so shrunk to 112x112 it is the
recogniser's input) and swaps all embeddings in one transaction: searches before it
see the old gallery, searches after it the new one, never a mix. Without a kept crop
for every face it changes nothing and says how many lack one.

Run it with the server stopped or running: replicas pick the new embeddings up from the
store's change sequence (a search with the old weights meanwhile is a 409).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from serve_app.config.settings import REPO_ROOT
from serve_app.jobs.runner import ConfigError, model_blocks

GALLERY, RECOGNISER = "FaceGallery", "ArcFace"
EMBED_SIZE = 112
CHUNK = 64  # crops embedded per model call
ACTOR = "cli:gallery-reembed"


def embed_crops(model, crops: list[bytes]) -> np.ndarray:
    """Kept headshots (image files) -> unit embeddings [N, D] from `model`."""
    import cv2

    from deployments.face_gallery.index import unit_rows
    from serve_app.imaging import decode_image

    out = []
    for at in range(0, len(crops), CHUNK):
        faces = [
            cv2.resize(decode_image(c), (EMBED_SIZE, EMBED_SIZE), interpolation=cv2.INTER_AREA)
            for c in crops[at : at + CHUNK]
        ]
        (embeddings,) = model.predict([np.stack(faces)])
        out.append(np.asarray(embeddings, np.float32))
    return unit_rows(np.concatenate(out))


def reembed(args: argparse.Namespace) -> int:
    from deployments.face_gallery.errors import GalleryError
    from serve_app.config.model_tier import model_config

    blocks = model_blocks(args)
    gallery_cls, gallery_cfg, _ = model_config(GALLERY, blocks.get(GALLERY))
    try:
        gallery = gallery_cls(gallery_cfg)
    except GalleryError as exc:
        raise ConfigError(f"the people gallery: {exc.message}") from None
    try:
        faces = gallery.store.face_crops()
        recogniser_cls, recogniser_cfg, weights = model_config(RECOGNISER, blocks.get(RECOGNISER))
        if not faces:
            print("gallery reembed: the gallery holds no faces: nothing to do")
            return 0
        if gallery.weights == weights and not args.force:
            print(f"gallery reembed: the gallery's {len(faces)} faces already come from {weights}: nothing to do")
            return 0
        lacking = sum(crop is None for _, _, crop in faces)
        if lacking:
            raise ConfigError(
                f"{lacking} of the gallery's {len(faces)} faces kept no crop (FaceGallery keep_crops was off when "
                "they were enrolled), so they cannot be re-embedded; nothing was changed. Enrol those people "
                "again from their photos with the new weights (into an emptied gallery) instead"
            )
        print(f"gallery reembed: {len(faces)} faces, {gallery.weights} -> {weights}")
        model = recogniser_cls(recogniser_cfg)
        try:
            embeddings = embed_crops(model, [crop for _, _, crop in faces])
        finally:
            model.close()
        rows = {face_id: e.astype("<f4").tobytes() for (face_id, _, _), e in zip(faces, embeddings)}
        try:
            done = gallery.store.reembed(rows, weights, embeddings.shape[1], ACTOR)
        except GalleryError as exc:
            raise ConfigError(f"the people gallery refused the re-embed: {exc.message}") from None
        people = len({person for _, person, _ in faces})
        print(f"gallery reembed: {done} faces of {people} people now come from {weights}")
        return 0
    finally:
        gallery.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegraph gallery", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reembed", help="re-embed every face from its kept crop with the configured recogniser")
    r.add_argument(
        "--serve-config",
        default=str(REPO_ROOT / "serve_config.yaml"),
        help="serve config whose models block names the gallery's store and the recogniser [default: %(default)s]",
    )
    r.add_argument("--asset", action="append", metavar="MODEL=ASSET", help="e.g. ArcFace=arcface-w600k-r50")
    r.add_argument("--force", action="store_true", help="re-embed even when the weights have not changed")
    return parser


def main(argv: list[str] | None = None) -> int:
    from serve_app.config.assets import AssetCorrupt, AssetMissing

    args = build_parser().parse_args(argv)
    try:
        return reembed(args)
    except (ConfigError, AssetMissing, AssetCorrupt) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
