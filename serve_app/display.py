"""Rounding for what people read (JSON responses, result rows), in one layer: the
pipelines keep full precision, apps and jobs round on the way out."""

from __future__ import annotations

import numpy as np

COORD_DIGITS = 2  # pixels: a hundredth is below any detector's precision
SCORE_DIGITS = 4


def box(values) -> list[float]:
    return [round(float(v), COORD_DIGITS) for v in values]


def boxes(rows) -> list[list[float]]:
    return [box(b) for b in rows]


def points(rows) -> list[list[float]]:
    return [[round(float(v), COORD_DIGITS) for v in p] for p in np.asarray(rows)]


def score(value: float) -> float:
    return round(float(value), SCORE_DIGITS)
