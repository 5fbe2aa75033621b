"""SAM2 prompts from a face-oval polygon: a box and labelled points.

    box       the oval's bounding box grown by `expand` on every side, clipped
    positives `pos_points` points inside the polygon, spread out, away from its edge
    negatives points just outside the grown box, inside the image

Points are [x, y, label] (1 positive, 0 negative) in pixels. Everything is a pure
function of its inputs (no randomness), so the same image gives the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deployments.geometry import clip_box, expand_box

GRID = 32  # candidate grid per side over the polygon's box
EDGE_MARGIN = 0.1  # keep positives this fraction of the face size inside the oval
NEG_GAP = 0.1  # negatives sit this fraction of the grown box's size outside it


@dataclass(frozen=True)
class FacePrompt:
    box: tuple[int, int, int, int]  # grown, clipped [x1, y1, x2, y2]
    points: tuple[tuple[float, float, int], ...]  # (x, y, label)

    def as_lists(self) -> tuple[list[int], list[list[float]]]:
        return list(self.box), [[x, y, label] for x, y, label in self.points]

    def shifted(self, dx: int, dy: int) -> FacePrompt:
        """The same prompt in a crop whose top-left corner is (dx, dy)."""
        x1, y1, x2, y2 = self.box
        return FacePrompt(
            (x1 - dx, y1 - dy, x2 - dx, y2 - dy),
            tuple((round(x - dx, 2), round(y - dy, 2), label) for x, y, label in self.points),
        )

    def extent(self) -> tuple[int, int, int, int]:
        """The smallest whole-pixel box holding the box and every point."""
        xs = [self.box[0], self.box[2], *(p[0] for p in self.points)]
        ys = [self.box[1], self.box[3], *(p[1] for p in self.points)]
        return int(np.floor(min(xs))), int(np.floor(min(ys))), int(np.ceil(max(xs))) + 1, int(np.ceil(max(ys))) + 1


def face_prompt(oval: np.ndarray, width: int, height: int, expand: float = 0.15, pos_points: int = 16) -> FacePrompt:
    oval = np.asarray(oval, np.float32).reshape(-1, 2)
    box = clip_box(expand_box(polygon_box(oval), expand), width, height)
    positives = [(x, y, 1) for x, y in positive_points(oval, pos_points)]
    negatives = [(x, y, 0) for x, y in negative_points(box, width, height)]
    return FacePrompt(box, tuple(positives + negatives))


def polygon_box(polygon: np.ndarray) -> tuple[float, float, float, float]:
    return (
        float(polygon[:, 0].min()),
        float(polygon[:, 1].min()),
        float(polygon[:, 0].max()),
        float(polygon[:, 1].max()),
    )


def positive_points(polygon: np.ndarray, n: int) -> list[tuple[float, float]]:
    """Up to n points inside the polygon, well spread: a grid over its box, the cells
    deep enough inside, then farthest-point sampling from the deepest one. Fewer than n
    only when the polygon is too small to hold n distinct points."""
    if n <= 0 or len(polygon) < 3:
        return []
    x1, y1, x2, y2 = polygon_box(polygon)
    xs = np.linspace(x1, x2, GRID + 2)[1:-1]
    ys = np.linspace(y1, y2, GRID + 2)[1:-1]
    candidates = np.array([(x, y) for y in ys for x in xs], np.float32)
    contour = polygon.reshape(-1, 1, 2)
    depth = np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), True) for x, y in candidates])
    margin = max(EDGE_MARGIN * min(x2 - x1, y2 - y1), 0.5)
    # Deep inside first (away from hairline and jaw edge); just inside if too few.
    keep = depth >= margin if np.count_nonzero(depth >= margin) >= n else depth > 0
    if not keep.any():  # degenerate (flat) polygon: its centre is the best we have
        return [(round(float(polygon[:, 0].mean()), 2), round(float(polygon[:, 1].mean()), 2))]
    candidates, depth = candidates[keep], depth[keep]
    chosen = [int(np.argmax(depth))]  # argmax takes the first of ties: deterministic
    dist = np.linalg.norm(candidates - candidates[chosen[0]], axis=1)
    while len(chosen) < min(n, len(candidates)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(candidates - candidates[nxt], axis=1))
    return [(round(float(candidates[i, 0]), 2), round(float(candidates[i, 1]), 2)) for i in chosen]


def negative_points(box, width: int, height: int) -> list[tuple[float, float]]:
    """Corners and edge midpoints of a ring just outside the grown box, keeping those
    inside the image (none when the box already fills the image)."""
    x1, y1, x2, y2 = box
    gap = max(2.0, NEG_GAP * max(x2 - x1, y2 - y1))
    left, top, right, bottom = x1 - gap, y1 - gap, x2 + gap, y2 + gap
    # Pull a side that would leave the image back to its last pixel, if that is still
    # outside the box; otherwise that side gets no negatives.
    left = max(left, 0.0) if x1 > 0 else None
    top = max(top, 0.0) if y1 > 0 else None
    right = min(right, width - 1.0) if x2 < width - 1 else None
    bottom = min(bottom, height - 1.0) if y2 < height - 1 else None
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ring = [
        (left, top),
        (cx, top),
        (right, top),
        (right, cy),
        (right, bottom),
        (cx, bottom),
        (left, bottom),
        (left, cy),
    ]
    points = []
    for px, py in ring:
        # A corner needs one coordinate outside the box; an edge midpoint its own side.
        x = cx if px is None else px
        y = cy if py is None else py
        if (px is None and py is None) or (x1 <= x <= x2 and y1 <= y <= y2):
            continue
        if 0 <= x <= width - 1 and 0 <= y <= height - 1:
            points.append((round(float(x), 2), round(float(y), 2)))
    return list(dict.fromkeys(points))  # drop duplicates, keep order
