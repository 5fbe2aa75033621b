"""Dense-CRF refinement of a face-probability map (pydensecrf2), CPU only.

Pure function; callers run it in a worker thread so an event loop never blocks on it.
"""

from __future__ import annotations

import numpy as np


def crf_refine(rgb: np.ndarray, prob: np.ndarray, iterations: int = 5) -> np.ndarray:
    """RGB uint8 HxWx3 and P(face) float HxW -> refined P(face) float32 HxW."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    h, w = prob.shape
    p = np.clip(prob.astype(np.float32), 1e-5, 1 - 1e-5)
    softmax = np.stack([1 - p, p])  # labels: 0 background, 1 face
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(softmax)))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    # pydensecrf needs C-contiguous uint8 for the bilateral term.
    crf.addPairwiseBilateral(sxy=40, srgb=13, rgbim=np.ascontiguousarray(rgb, dtype=np.uint8), compat=10)
    q = np.asarray(crf.inference(iterations), dtype=np.float32).reshape(2, h, w)
    return q[1]
