"""Calibrate a recogniser's similarity threshold (the `similarity_threshold` of its entry
in assets/manifest.yaml) from genuine and impostor cosine similarities on the labelled
faces of the asset mirror, and report what the de-duplication rules do on the group photos.

Data (the `test` asset set; faces found and aligned by the extraction pipeline itself):
- impostors, within a photo: every two faces of one photo (a person appears once in a
  photo): the photos of test-images-photos that have people in them, and the PASCAL VOC
  photos of benchmark-dlib-faces, where only detections of the human-labelled boxes
  (training.xml) are used;
- impostors, across photos: two faces of different photos whose people differ (every
  photo is its own set of people, except the two LFW Rob Lowe photos), plus the
  pre-aligned LFW faces and the aligned Tom Hanks crop against everything else;
- genuine, labelled: LFW Rob_Lowe_0001/0002 (detected and aligned here) and LFW
  Aaron_Peirsol_0003/0004 (pre-aligned 112x112);
- genuine, mirrored: each face against itself in the horizontally flipped photo (the
  "photo sent twice, once mirrored" case).
Only faces at or above the quality floor (FaceExtractParams' defaults) count: faces under
it are never merged, whatever their similarity.

Rule: the threshold is the impostor similarity at a false-merge rate `--fmr` (default
1e-4: one stranger pair in 10,000 merged), i.e. the (1 - fmr) quantile of the impostor
similarities taken at an observed value, then the next 0.01 above it. With fewer than
1/fmr impostor pairs that is the largest impostor similarity seen. The genuine pairs are
reported against it; a labelled genuine pair under it is printed as a warning.

    .venv/bin/python scripts/calibrate_threshold.py [--recogniser arcface-mobilefacenet-128d]
        [--detector retinaface-det-500m] [--fmr 1e-4] [--check]

--check exits with status 1 unless the manifest holds the threshold computed here.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from deployments.arcface.model import ArcFace, ArcFaceConfig
from deployments.geometry import iou
from deployments.retinaface.model import RetinaFace, RetinaFaceConfig
from deployments.serving import LocalBatcher
from serve_app.config.assets import load_manifest, resolve
from serve_app.faces.dedup import deduplicate
from serve_app.imaging import decode_image
from serve_app.pipelines.face_extract import FaceExtractParams, faces_in_image, meets_quality_floor

OLD_THRESHOLD = 0.4  # the documented default before thresholds were calibrated per recogniser
SAME_PERSON = {"lfw_Rob_Lowe_0001.jpg": "Rob_Lowe", "lfw_Rob_Lowe_0002.jpg": "Rob_Lowe"}
GROUP_PHOTOS = (
    "facedet1mb_nine_kids.jpg",
    "facedet1mb_worlds_largest_selfie.jpg",
    "insightface_t1.jpg",
    "ultralight_audience_profiles_24.jpg",
    "ultralight_handshake_13.jpg",
    "3ddfa_trump_hillary.jpg",
    "2007_007763.jpg",
    "2008_001009.jpg",
    "2008_001322.jpg",
    "2008_002079.jpg",
)


def overlaps(a, b) -> np.ndarray:
    """IoU of every box of `a` [N, 4] with every box of `b` [M, 4] -> [N, M]."""
    return np.array([[iou(x, y) for y in b] for x in a], np.float64).reshape(len(a), len(b))


def labelled_boxes(xml_path: Path) -> dict[str, np.ndarray]:
    """dlib imglab XML -> {file: [K, 4] x1, y1, x2, y2}."""
    out = {}
    for image in ET.parse(xml_path).getroot().iter("image"):
        boxes = [
            [
                float(b.get("left")),
                float(b.get("top")),
                float(b.get("left")) + float(b.get("width")),
                float(b.get("top")) + float(b.get("height")),
            ]
            for b in image.iter("box")
        ]
        out[image.get("file")] = np.array(boxes, np.float32).reshape(-1, 4)
    return out


def detections_of_labels(faces, labels: np.ndarray) -> list:
    """The detection of each labelled face: dlib's boxes are tight (brows to chin), the
    detector's larger, so a detection counts when it holds the label's centre and is its
    best overlap."""
    if not faces:
        return []
    boxes = np.stack([f.bbox for f in faces])
    overlap = overlaps(labels, boxes)
    picked = []
    for k, label in enumerate(labels):
        j = int(overlap[k].argmax())
        cx, cy = (label[0] + label[2]) / 2, (label[1] + label[3]) / 2
        b = boxes[j]
        if overlap[k, j] > 0 and b[0] <= cx <= b[2] and b[1] <= cy <= b[3] and j not in picked:
            picked.append(j)
    return [faces[j] for j in sorted(picked)]


def mirrored_similarity(faces, flipped_faces, width: int) -> list[float | None]:
    """Each face's cosine to itself in the flipped photo (None: not found there)."""
    if not flipped_faces:
        return [None] * len(faces)
    back = np.stack([[width - f.bbox[2], f.bbox[1], width - f.bbox[0], f.bbox[3]] for f in flipped_faces])
    out = []
    for f in faces:
        overlap = overlaps(f.bbox[None], back)[0]
        j = int(overlap.argmax())
        out.append(float(f.embedding @ flipped_faces[j].embedding) if overlap[j] > 0.5 else None)
    return out


def summary(values) -> str:
    v = np.asarray(values, np.float64)
    if not len(v):
        return "n=0"
    p = np.percentile(v, [1, 5, 50, 95, 99, 99.9])
    return (
        f"n={len(v)} mean={v.mean():.3f} min={v.min():.3f} p1={p[0]:.3f} p5={p[1]:.3f} median={p[2]:.3f} "
        f"p95={p[3]:.3f} p99={p[4]:.3f} p99.9={p[5]:.3f} max={v.max():.3f}"
    )


def calibrated(impostors: np.ndarray, fmr: float) -> tuple[float, float]:
    """(impostor similarity at the false-merge rate, the threshold: the next 0.01 above it)."""
    at = float(np.quantile(impostors, 1.0 - fmr, method="higher"))
    return at, math.floor(at * 100 + 1) / 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recogniser", default="arcface-mobilefacenet-128d", help="manifest asset of the recogniser")
    parser.add_argument("--detector", default="retinaface-det-500m", help="manifest asset of the detector")
    parser.add_argument("--fmr", type=float, default=1e-4, help="false-merge rate allowed on impostor pairs")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the manifest holds this threshold")
    args = parser.parse_args()

    params = FaceExtractParams()  # detection size filter and quality floor: the endpoint's defaults
    detect = LocalBatcher(RetinaFace(RetinaFaceConfig(model_path=str(resolve(args.detector)))))
    recogniser = ArcFace(ArcFaceConfig(model_path=str(resolve(args.recogniser))))
    embed = LocalBatcher(recogniser)
    photos_dir, dlib_dir = resolve("test-images-photos"), resolve("benchmark-dlib-faces")
    labels = labelled_boxes(dlib_dir / "training.xml")

    # Every face: (photo, identity key, face, self-similarity when mirrored).
    faces, group_faces = [], {}
    paths = sorted(
        p for p in photos_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and "noface" not in p.name
    ) + [dlib_dir / name for name in sorted(labels)]
    for path in paths:
        image = decode_image(path.read_bytes())
        found = asyncio.run(faces_in_image(image, 0, params, detect=detect, embed=embed))
        flipped = asyncio.run(
            faces_in_image(np.ascontiguousarray(image[:, ::-1]), 1, params, detect=detect, embed=embed)
        )
        if path.name in labels:
            found = detections_of_labels(found, labels[path.name])
        group_faces[path.name] = (found, flipped)
        for face, mirror in zip(found, mirrored_similarity(found, flipped, image.shape[1])):
            faces.append((path.name, SAME_PERSON.get(path.name, path.name), face, mirror))

    aligned = {p.stem: p for p in sorted(resolve("benchmark-lfw-aligned-112").glob("*.jpg"))}
    aligned["Tom_Hanks_54745"] = photos_dir / "insightface_Tom_Hanks_54745_aligned112.png"
    aligned_emb = {name: recogniser.predict([decode_image(p.read_bytes())])[0] for name, p in aligned.items()}

    good = [(photo, who, f, m) for photo, who, f, m in faces if meets_quality_floor(f.bbox, f.score, params)]
    emb = np.stack([f.embedding for _, _, f, _ in good])
    photo = np.array([p for p, _, _, _ in good])
    who = np.array([w for _, w, _, _ in good])
    sims = emb @ emb.T
    upper = np.triu(np.ones_like(sims, bool), 1)
    within = sims[upper & (photo[:, None] == photo[None, :])]
    across = sims[upper & (who[:, None] != who[None, :])]
    identity = {name: name.rsplit("_", 1)[0] for name in aligned_emb}
    names = sorted(aligned_emb)
    aligned_across = [
        float(aligned_emb[a] @ aligned_emb[b])
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if identity[a] != identity[b]
    ]
    aligned_across += [float(aligned_emb[a] @ e) for a in names for e in emb]
    impostors = np.concatenate([within, across, aligned_across])
    genuine_labelled = {
        "Rob_Lowe_0001/0002": float(
            sims[upper & (who[:, None] == who[None, :]) & (photo[:, None] != photo[None, :])][0]
        ),
        "Aaron_Peirsol_0003/0004": float(aligned_emb["Aaron_Peirsol_0003"] @ aligned_emb["Aaron_Peirsol_0004"]),
    }
    mirrored = np.array([m for _, _, _, m in good if m is not None])

    at, threshold = calibrated(impostors, args.fmr)
    print(
        f"recogniser {args.recogniser} (dim {recogniser.embedding_size}), detector {args.detector}; quality floor: "
        f"shorter side >= {params.quality_min_face_size:g} px, detector score >= {params.quality_min_score:g}; "
        f"{len(faces)} faces, {len(good)} at or above the floor"
    )
    print(
        "\nquality floor: each face against itself mirrored (genuine), and the strongest impostor, by face size "
        "and detector score"
    )
    all_mirror = [(f, m) for _, _, f, m in faces if m is not None]
    for lo, hi in ((20, 24), (24, 28), (28, 32), (32, 40), (40, 64), (64, 10_000)):
        ms = [m for f, m in all_mirror if lo <= min(f.bbox[2] - f.bbox[0], f.bbox[3] - f.bbox[1]) < hi]
        print(f"  size {lo:>3}-{hi:<5} mirrored: {summary(ms)}")
    for lo, hi in ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.01)):
        ms = [m for f, m in all_mirror if lo <= f.score < hi]
        print(f"  score {lo:.1f}-{min(hi, 1):.1f} mirrored: {summary(ms)}")

    print(f"\nimpostor pairs (faces at or above the floor): {summary(impostors)}")
    print(f"  within a photo: {summary(within)}")
    print(f"  across photos:  {summary(np.concatenate([across, aligned_across]))}")
    print(f"genuine, labelled: {', '.join(f'{k} {v:.3f}' for k, v in genuine_labelled.items())}")
    print(f"genuine, mirrored copies: {summary(mirrored)}")
    if len(impostors) * args.fmr < 1:
        print(f"note: {len(impostors)} impostor pairs < 1/fmr: the quantile is the largest impostor similarity seen")
    print(f"\nimpostor similarity at FMR {args.fmr:g}: {at:.4f} -> threshold {threshold:.2f}")
    print(
        f"  impostors at or above it: {(impostors >= threshold).sum()} of {len(impostors)}; genuine: labelled "
        f"{sum(v >= threshold for v in genuine_labelled.values())} of {len(genuine_labelled)}, mirrored "
        f"{(mirrored >= threshold).sum()} of {len(mirrored)}"
    )
    for name, value in genuine_labelled.items():
        if value < threshold:
            print(f"WARNING: the labelled genuine pair {name} ({value:.3f}) is under the threshold")

    print(
        f"\ngroup photos (faces >= {params.min_face_size:g} px): people found by the old rule (threshold "
        f"{OLD_THRESHOLD}, no cannot-link, no quality floor) and by the new defaults; sent twice, once mirrored"
    )
    for name in GROUP_PHOTOS:
        found, flipped = group_faces[name]
        if not found:
            continue
        e = np.stack([f.embedding for f in found])
        ok = np.array([meets_quality_floor(f.bbox, f.score, params) for f in found])
        old = len(deduplicate(e, OLD_THRESHOLD).kept)
        new = len(deduplicate(e, threshold, groups=np.zeros(len(e)), eligible=ok).kept)
        both = found + flipped
        e2 = np.stack([f.embedding for f in both])
        ok2 = np.array([meets_quality_floor(f.bbox, f.score, params) for f in both])
        twice = deduplicate(e2, threshold, groups=np.array([0] * len(found) + [1] * len(flipped)), eligible=ok2)
        width = decode_image(((dlib_dir if name in labels else photos_dir) / name).read_bytes()).shape[1]
        mirror_of = {}
        for i, f in enumerate(found):
            back = [[width - g.bbox[2], g.bbox[1], width - g.bbox[0], g.bbox[3]] for g in flipped]
            if back:
                overlap = overlaps(f.bbox[None], np.array(back))[0]
                if overlap.max() > 0.5:
                    mirror_of[len(found) + int(overlap.argmax())] = i
        joined = [(j, int(twice.leader[j])) for j in range(len(found), len(both)) if twice.leader[j] != j]
        own = sum(1 for j, lead in joined if mirror_of.get(j) == lead)
        print(
            f"  {name:40s} faces {len(found):3d} | old rule {old:3d} people | new {new:3d} people "
            f"({int((~ok).sum())} low quality) | sent twice: {len(both)} faces -> {len(twice.kept)} people, "
            f"{len(joined)} merges, {own} with their own copy, {int(ok.sum())} faces above the floor"
        )

    entry = load_manifest().get(args.recogniser)
    recorded = entry.similarity_threshold if entry else None
    print(f"\nmanifest {args.recogniser}: similarity_threshold {recorded}")
    if args.check and (recorded is None or abs(recorded - threshold) > 1e-9):
        print("manifest threshold differs from the calibrated one")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
