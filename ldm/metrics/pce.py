"""PCE: person count error, mean |#ground-truth persons - #detected persons| per image (spec §6.5).

The mean runs over **all** evaluated images, including those whose conditioning pose has no person (a detection
there is an error of 1 per person). The original ("Human Number Difference", HND) looped over
``range(len(gt_coco.imgToAnns))``, i.e. indices 0..n-1 with n = number of images *with* ground truth, so it skipped
or mis-indexed the other images. A ground-truth person needs at least one visible joint (as in the pose AP);
every detection counts (no score filter, as the original).

``min_score`` gives a variant that counts only detections whose person score reaches it. A bottom-up network
reports every heatmap peak above its detection threshold that it cannot group as a person of its own; such
fragments score far below real persons (the tiny mannequin pose net: 95% of fragments below 0.15, 95% of persons
above 0.47 on real renders) but each adds 1 to the original PCE. The variant separates "drew the wrong number of
people" from "the detector left low-score fragments"; report it next to the original, never instead of it.

References:
    HumanSD (IDEA-Research/HumanSD, c5db29d), utils/metrics/pose_metrics.py; spec §6.5 of
        shared/spec/humansd-reference.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ldm.metrics.pose_ap import PoseSample, gt_persons

__all__ = ["pce", "person_count_error"]


def person_count_error(gt_counts: Sequence[int], detected_counts: Sequence[int]) -> float:
    """Mean absolute difference of per-image person counts.

    Args:
        gt_counts: ground-truth persons per image (0 allowed).
        detected_counts: detected persons per image, same order and length.

    Returns:
        mean_i |gt_i - det_i|.
    """
    if len(gt_counts) != len(detected_counts):
        raise ValueError(
            f"person_count_error needs one count per image on both sides; got {len(gt_counts)} ground-truth and "
            f"{len(detected_counts)} detected counts."
        )
    if not gt_counts:
        raise ValueError("person_count_error needs at least one image.")
    diff = np.abs(np.asarray(gt_counts, dtype=np.int64) - np.asarray(detected_counts, dtype=np.int64))
    return float(diff.mean())


def pce(samples: Sequence[PoseSample], *, min_score: float = 0.0) -> float:
    """PCE over all samples (ground-truth persons = those with a visible joint).

    Args:
        samples: ground truth and detections per image.
        min_score: count only detections with a person score >= this (0: all of them, as the original).
    """
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"pce: min_score must be in [0, 1]; got {min_score}.")
    detected = [sum(1 for d in s.detections if d.score >= min_score) for s in samples]
    return person_count_error([len(gt_persons(s.gt)) for s in samples], detected)
