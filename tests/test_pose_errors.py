"""Keypoint error diagnosis (ldm.metrics.pose_errors): each error class on a constructed scene, AP per fix."""

from __future__ import annotations

import numpy as np
import pytest

from ldm.metrics.pose_errors import ERROR_TYPES, analyze_keypoint_errors
from ldm.pose.keypoints import COCO_OKS_SIGMAS, NUM_KEYPOINTS, Person
from ldm.training.pose_eval import CocoKeypointEvaluator


def _grid_person(x0: float, y0: float) -> np.ndarray:
    """17 labelled joints on a 5-wide grid, 12 px apart (no two joints closer than 12 px)."""
    j = np.arange(NUM_KEYPOINTS)
    return np.stack([x0 + (j % 5) * 12.0, y0 + (j // 5) * 12.0, np.ones(NUM_KEYPOINTS)], -1)


def _area(person: np.ndarray) -> float:
    xy = person[person[:, 2] > 0, :2]
    return float(np.prod(xy.max(0) - xy.min(0)))


def _scene() -> tuple[np.ndarray, np.ndarray]:
    a, b = _grid_person(10, 10), _grid_person(110, 10)
    a[16, 2] = 0  # one unlabelled joint: never classified
    return a, b


def test_each_error_class_is_found_and_costs_ap() -> None:
    a, b = _scene()
    det = a.copy()
    det[16, :2] = (0.0, 0.0)
    det[[9, 10], :2] = a[[10, 9], :2]  # left/right wrists exchanged: 2 inversions
    det[0, :2] = b[0, :2]  # the nose of the other person: 1 swap
    sigma5 = COCO_OKS_SIGMAS[5]
    jitter_px = 2 * sigma5 * np.sqrt(-2 * _area(a) * np.log(0.7))  # ks 0.7 against the right joint
    det[5, 1] -= jitter_px  # 1 jitter
    det[7, 1] += 40.0  # far from every joint: 1 miss
    evaluator = CocoKeypointEvaluator()
    evaluator.add(
        "a.jpg",
        [Person(det, score=0.9), Person(b.copy(), score=0.8)],
        width=200,
        height=100,
        keypoints=np.stack([a, b]),
    )
    report = evaluator.error_analysis()
    assert report.counts == {"good": 11 + 17, "jitter": 1, "inversion": 2, "swap": 1, "miss": 1}
    assert report.counts_by_joint["inversion"][9:11] == [1, 1] and sum(report.counts_by_joint["inversion"]) == 2
    assert report.counts_by_joint["swap"][0] == 1 and report.counts_by_joint["good"][16] == 1  # B's joint 16
    assert report.matched_detections == 2 and report.persons == 2 and report.unmatched_persons == 0
    assert report.ap == pytest.approx(evaluator.compute().ap)
    assert report.ap < 1.0
    for kind in ERROR_TYPES:
        assert report.ap_fixed_alone[kind] >= report.ap - 1e-9
    assert report.ap_fixed_alone["inversion"] > report.ap  # fixing the two wrists alone raises OKS
    cumulative = [report.ap_fixed_cumulative[k] for k in ERROR_TYPES]
    assert cumulative == sorted(cumulative) and cumulative[-1] == pytest.approx(1.0)
    summary = report.as_dict()
    assert summary["joint_counts_by_keypoint"]["inversion"]["left_wrist"] == 1
    assert summary["joint_counts"]["inversion"] == 2 and sum(summary["joint_fractions"].values()) == pytest.approx(1)


def test_perfect_detections_are_all_good_and_missed_persons_are_counted() -> None:
    a, b = _scene()
    evaluator = CocoKeypointEvaluator()
    evaluator.add("a.jpg", [Person(a.copy(), score=0.9)], width=200, height=100, keypoints=np.stack([a, b]))
    report = evaluator.error_analysis()
    assert report.counts == {"good": 16, "jitter": 0, "inversion": 0, "swap": 0, "miss": 0}
    assert report.unmatched_persons == 1 and report.detections == 1
    assert set(report.ap_fixed_alone.values()) == {report.ap}  # nothing to correct: AP limited by the miss only


def test_bad_input_is_rejected() -> None:
    a, b = _scene()
    evaluator = CocoKeypointEvaluator()
    with pytest.raises(ValueError, match="No image"):
        evaluator.error_analysis()
    evaluator.add("a.jpg", [], width=200, height=100, keypoints=np.stack([a, b]))
    with pytest.raises(ValueError, match="No person detected"):
        evaluator.error_analysis()
    evaluator.add("b.jpg", [Person(a.copy(), score=0.9)], width=200, height=100, keypoints=a[None])
    gt, dt = evaluator._coco_pair()
    with pytest.raises(ValueError, match="jitter_ks < good_ks"):
        analyze_keypoint_errors(gt, dt, good_ks=0.4, jitter_ks=0.5)
    with pytest.raises(ValueError, match="permutation"):
        analyze_keypoint_errors(gt, dt, flip_index=[0] * NUM_KEYPOINTS)


def test_generated_image_metrics_count_a_mirrored_figure_as_inversions() -> None:
    from ldm.metrics.evaluate import EvalOptions, _pose_metrics
    from ldm.metrics.pose_ap import PoseSample
    from ldm.metrics.pose_errors import ERROR_METRIC_NAMES, pose_error_metrics
    from ldm.pose.keypoints import COCO_FLIP_INDEX

    a, b = _grid_person(10, 10), _grid_person(110, 10)
    mirrored = a[list(COCO_FLIP_INDEX)]  # every left joint labelled right and vice versa (a figure read back to front)
    samples = [PoseSample(200, 100, [Person(a), Person(b)], [Person(mirrored, score=0.9), Person(b.copy(), 0.8)])]
    metrics = pose_error_metrics(samples)
    assert list(metrics) == list(ERROR_METRIC_NAMES)
    assert metrics["joints inversion"] == pytest.approx(16 / 34)  # 8 left/right pairs of A; the nose and B are good
    assert metrics["joints good"] == pytest.approx(18 / 34)
    assert metrics["AP fixed inversion"] == pytest.approx(1.0) and metrics["AP fixed all"] == pytest.approx(1.0)
    with_errors = _pose_metrics(samples, EvalOptions(metrics=("pose",), pose_errors=True))
    assert with_errors["AP"] < metrics["AP fixed inversion"] and "joints inversion" in with_errors
    assert "joints inversion" not in _pose_metrics(samples, EvalOptions(metrics=("pose",)))
    nothing = pose_error_metrics([PoseSample(200, 100, [Person(a)], [])])
    assert set(nothing.values()) == {None}
