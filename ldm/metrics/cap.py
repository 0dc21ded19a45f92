"""CAP: average precision of pose shape, with a weighted cosine similarity in place of OKS (spec §6.4).

For a ground-truth person g and a detection d (steps of the original ``weightedCosineSimilarity``):

1. divide x and y of both by the per-joint COCO sigmas;
2. keep the joints visible in g (the mask applies to g and d alike);
3. min-max normalise each of x_g, y_g, x_d, y_d to [0, 1] separately;
4. L2-normalise each of those four vectors;
5. similarity = cos([x_g, y_g], [x_d, y_d]).

Matching and averaging are COCO's: ``SimilarityEval`` is pycocotools' ``COCOeval`` with ``computeOks`` replaced
by this similarity, so the greedy score-ordered matching at thresholds .50:.05:.95, ``maxDets [20]``, the area
ranges and the 101-point interpolated precision are exactly those of the pose AP. CAP is ``stats[0]``.

Differences from the original code, all deliberate:

* The original replaced y_d by x_d / ||y_d|| in step 4 (``yd=xd/np.sqrt((yd**2).sum())``), so the detection's
  y coordinates never entered the score. That bug is reproduced only with ``original_bug=True``.
* Degenerate poses no longer give NaN (0 / 0). (a) When all visible ground-truth joints lie on one pixel (a single
  visible joint, say) a pose has no shape: the similarity is then the OKS of those joints, i.e. defined by
  position, 1 when they coincide and falling off with distance as in the pose AP. (b) When one of the four
  vectors has zero range (e.g. all joints on one vertical line), min-max normalisation maps it to the constant
  0.5: "no spread along this axis", which L2-normalises to a constant vector and matches another constant one.
* Everything else (sigma weighting, ground-truth visibility mask, coordinates of undetected joints used as given)
  follows the original.

References:
    HumanSD (IDEA-Research/HumanSD, c5db29d), utils/metrics/coco_similarity.py (``COCOevalSimilarity``); spec §6.4
        of shared/spec/humansd-reference.md.
    pycocotools ``COCOeval`` (``computeOks``, ``evaluateImg``, ``accumulate``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ldm.metrics.pose_ap import PoseSample, build_coco, run_coco_eval
from ldm.pose.keypoints import COCO_OKS_SIGMAS, NUM_KEYPOINTS

__all__ = ["SimilarityEval", "cap", "keypoint_oks", "pose_similarity"]

_SIGMAS = np.asarray(COCO_OKS_SIGMAS, dtype=np.float64)


def _check(keypoints: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(keypoints, dtype=np.float64)
    if arr.shape == (NUM_KEYPOINTS * 3,):
        arr = arr.reshape(NUM_KEYPOINTS, 3)
    if arr.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"{name} must have shape (17, 3) or (51,) as (x, y, v); got {arr.shape}.")
    return arr


def keypoint_oks(gt: np.ndarray, dt: np.ndarray, *, area: float) -> float:
    """Object keypoint similarity over the ground truth's visible joints (pycocotools' formula).

    Args:
        gt: (17, 3) ground truth (x, y, visibility); joints with visibility > 0 count.
        dt: (17, 3) detection (x, y, score).
        area: ground-truth object area in pixels² (the OKS scale s²).

    Returns:
        OKS in [0, 1]; 0 when no ground-truth joint is visible.
    """
    gt, dt = _check(gt, "gt"), _check(dt, "dt")
    vis = gt[:, 2] > 0
    if not vis.any():
        return 0.0
    variances = (2 * _SIGMAS[vis]) ** 2
    d2 = (dt[vis, 0] - gt[vis, 0]) ** 2 + (dt[vis, 1] - gt[vis, 1]) ** 2
    return float(np.mean(np.exp(-d2 / variances / (area + np.spacing(1)) / 2)))


def _min_max(values: np.ndarray) -> np.ndarray:
    """Map to [0, 1]; a zero-range vector becomes the constant 0.5 (the original divided 0 by 0)."""
    low, span = values.min(), values.max() - values.min()
    if span <= 0:
        return np.full_like(values, 0.5)
    return (values - low) / span


def _unit(values: np.ndarray) -> np.ndarray:
    return values / np.linalg.norm(values)  # non-zero: _min_max output holds a 1 or is constant 0.5


def pose_similarity(gt: np.ndarray, dt: np.ndarray, *, area: float, original_bug: bool = False) -> float:
    """Sigma-weighted cosine similarity of two poses' normalised coordinates (steps 1-5 of the module docstring).

    Args:
        gt: (17, 3) ground truth (x, y, visibility > 0 for visible joints).
        dt: (17, 3) detection (x, y, score); all its joints are used where the ground truth is visible.
        area: ground-truth area, used only by the degenerate-pose fallback (OKS).
        original_bug: reproduce the original's step-4 bug (y_d := x_d / ||y_d||).

    Returns:
        Similarity in [0, 1] (min-max normalised coordinates are non-negative, so the cosine is too); 0 when the
        ground truth has no visible joint.
    """
    gt, dt = _check(gt, "gt"), _check(dt, "dt")
    vis = gt[:, 2] > 0
    if not vis.any():
        return 0.0
    if len(np.unique(gt[vis, :2], axis=0)) < 2:
        return keypoint_oks(gt, dt, area=area)  # no shape to compare: fall back to position (see module docstring)
    sigmas = _SIGMAS[vis]
    # 1-3. Weight by 1/sigma, mask by ground-truth visibility, min-max normalise each coordinate vector.
    x_g, y_g = _min_max(gt[vis, 0] / sigmas), _min_max(gt[vis, 1] / sigmas)
    x_d, y_d = _min_max(dt[vis, 0] / sigmas), _min_max(dt[vis, 1] / sigmas)
    # 4. L2-normalise each vector.
    x_g, y_g, x_d_unit = _unit(x_g), _unit(y_g), _unit(x_d)
    y_d = x_d_unit / np.linalg.norm(y_d) if original_bug else _unit(y_d)  # original: yd = xd / sqrt(sum(yd**2))
    # 5. Cosine of the concatenated [x, y] vectors.
    g, d = np.concatenate([x_g, y_g]), np.concatenate([x_d_unit, y_d])
    return float(g @ d / (np.linalg.norm(g) * np.linalg.norm(d)))


class SimilarityEval(COCOeval):
    """pycocotools ``COCOeval`` (keypoints) matching on :func:`pose_similarity` instead of OKS.

    Args:
        coco_gt: ground truth (see :func:`ldm.metrics.pose_ap.build_coco`).
        coco_dt: detections.
        original_bug: reproduce the original's y-coordinate bug.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, *, original_bug: bool = False) -> None:
        super().__init__(coco_gt, coco_dt, iouType="keypoints")
        self.original_bug = original_bug

    def computeOks(self, imgId: int, catId: int) -> np.ndarray | list:  # pycocotools' hook and argument names
        """(D, G) similarities of one image's detections (score order, top maxDets) and ground-truth persons."""
        gts = self._gts[imgId, catId]
        dts = self._dts[imgId, catId]
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        dts = [dts[i] for i in order][: self.params.maxDets[-1]]
        if not gts or not dts:
            return []
        sims = np.zeros((len(dts), len(gts)))
        for j, g in enumerate(gts):
            g_kpts = np.asarray(g["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
            for i, d in enumerate(dts):
                d_kpts = np.asarray(d["keypoints"], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
                sims[i, j] = pose_similarity(g_kpts, d_kpts, area=g["area"], original_bug=self.original_bug)
        return sims


def cap(samples: Sequence[PoseSample], *, original_bug: bool = False) -> dict[str, float | None]:
    """CAP and its companions over all samples at once.

    Args:
        samples: the evaluated images (ground truth and detections, as for the pose AP).
        original_bug: reproduce the original's y-coordinate bug (see the module docstring).

    Returns:
        ``CAP, CAP50, CAP75, CAP(M), CAP(L), CAR, CAR50, CAR75, CAR(M), CAR(L)`` in [0, 1] (None without ground
        truth in the relevant area range).
    """
    if not samples:
        raise ValueError("cap needs at least one image.")
    gt, dt = build_coco(samples)
    return run_coco_eval(SimilarityEval(gt, dt, original_bug=original_bug), prefix="C")
