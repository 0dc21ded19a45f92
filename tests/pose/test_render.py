"""Pixel exactness of the HumanSD and OpenPose-18 renderers against independent cv2 call sequences (spec 3.5, 5.5)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from ldm.pose.keypoints import Person, Pose
from ldm.pose.render import (
    HUMANSD_COLORS,
    OPENPOSE_COLORS,
    SkeletonRule,
    SkeletonStyle,
    draw_humansd_skeleton,
    draw_openpose_skeleton,
    overlay_skeleton,
    render_pose_map,
)

# Spec 3.5 table, idx -> (a, b, RGB).
SPEC_LIMBS = [
    (0, 1, (219, 94, 86)),
    (0, 2, (219, 144, 86)),
    (1, 3, (219, 194, 86)),
    (2, 4, (194, 219, 86)),
    (3, 5, (145, 219, 86)),
    (4, 6, (95, 219, 86)),
    (5, 7, (86, 219, 127)),
    (6, 8, (86, 219, 177)),
    (7, 9, (86, 211, 219)),
    (8, 10, (86, 161, 219)),
    (5, 11, (86, 111, 219)),
    (6, 12, (111, 86, 219)),
    (11, 13, (160, 86, 219)),
    (12, 14, (210, 86, 219)),
    (13, 15, (219, 86, 178)),
    (14, 16, (219, 86, 128)),
]
SPEC_OPENPOSE_FROM_COCO = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
SPEC_OPENPOSE_LIMBS = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12], [12, 13]]
SPEC_OPENPOSE_LIMBS += [[13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]


def reference_humansd(kpts_all: np.ndarray, h: int, w: int, qualifies) -> np.ndarray:
    """Spec 3.5 written out with plain cv2 calls on a float64 canvas, as the original."""
    canvas = np.zeros((h, w, 3))
    for kpts in kpts_all:
        if not np.sum(kpts) > 0:
            continue
        for a, b, color in SPEC_LIMBS:
            if qualifies(kpts[a]) and qualifies(kpts[b]):
                pa, pb = (int(kpts[a, 0]), int(kpts[a, 1])), (int(kpts[b, 0]), int(kpts[b, 1]))
                cv2.line(canvas, pa, pb, color, 10)
                cv2.circle(canvas, pa, 5, color, -1)
                cv2.circle(canvas, pb, 5, color, -1)
    return canvas.astype(np.uint8)


def reference_openpose(kpts_all: np.ndarray, h: int, w: int, thresh: float) -> np.ndarray:
    """Spec 5.5 written out (float64 canvas, per-limb 0.4 / 0.6 blend, then joints)."""
    canvas = np.zeros((h, w, 3))
    for k in kpts_all:
        cand = []
        for src in SPEC_OPENPOSE_FROM_COCO:
            if src is not None:
                cand.append([k[src, 0], k[src, 1], k[src, 2]])
            elif k[6, 2] > thresh and k[5, 2] > thresh:
                cand.append([(k[6, 0] + k[5, 0]) / 2, (k[6, 1] + k[5, 1]) / 2, (k[6, 2] + k[5, 2]) / 2])
            else:
                cand.append([-1, -1, 0])
        for i, (a1, b1) in enumerate(SPEC_OPENPOSE_LIMBS):
            a, b = cand[a1 - 1], cand[b1 - 1]
            if a[2] > thresh and b[2] > thresh:
                x_mean, y_mean = np.mean([b[0], a[0]]), np.mean([b[1], a[1]])
                length = ((b[1] - a[1]) ** 2 + (b[0] - a[0]) ** 2) ** 0.5
                angle = math.degrees(math.atan2(b[1] - a[1], b[0] - a[0]))
                poly = cv2.ellipse2Poly((int(x_mean), int(y_mean)), (int(length / 2), 4), int(angle), 0, 360, 1)
                layer = canvas.copy()
                cv2.fillConvexPoly(layer, poly, OPENPOSE_COLORS[i])
                canvas = cv2.addWeighted(canvas, 0.4, layer, 0.6, 0)
        for i, (x, y, s) in enumerate(cand):
            if s > thresh:
                cv2.circle(canvas, (int(x), int(y)), 4, OPENPOSE_COLORS[i], thickness=-1)
    return canvas.astype(np.uint8)


def random_people(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kpts = np.empty((n, 17, 3), dtype=np.float32)
    kpts[..., 0] = rng.uniform(-10, w + 10, (n, 17))
    kpts[..., 1] = rng.uniform(-10, h + 10, (n, 17))
    kpts[..., 2] = rng.uniform(0, 1, (n, 17))
    return kpts


def single_limb(a: int, b: int, pa: tuple[float, float], pb: tuple[float, float], score: float = 0.9) -> np.ndarray:
    kpts = np.zeros((1, 17, 3), dtype=np.float32)
    kpts[0, a] = [*pa, score]
    kpts[0, b] = [*pb, score]
    return kpts


def test_colour_table_matches_spec() -> None:
    assert list(HUMANSD_COLORS) == [color for _, _, color in SPEC_LIMBS]


def test_single_limb_equals_cv2_sequence() -> None:
    kpts = single_limb(5, 7, (100.7, 50.2), (140.9, 120.6))
    expected = np.zeros((160, 200, 3))
    cv2.line(expected, (100, 50), (140, 120), (86, 219, 127), 10)
    cv2.circle(expected, (100, 50), 5, (86, 219, 127), -1)
    cv2.circle(expected, (140, 120), 5, (86, 219, 127), -1)
    out = draw_humansd_skeleton(kpts, 160, 200)
    assert out.dtype == np.uint8 and out.shape == (160, 200, 3)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


@pytest.mark.parametrize("seed", [0, 1])
def test_humansd_inference_rule_matches_reference(seed: int) -> None:
    kpts = random_people(3, 96, 128, seed)
    expected = reference_humansd(kpts, 96, 128, lambda j: j[2] > 0.05)
    np.testing.assert_array_equal(draw_humansd_skeleton(kpts, 96, 128), expected)


def test_humansd_train_rule_matches_reference() -> None:
    kpts = random_people(2, 64, 64, seed=2).astype(np.float64)
    kpts[0, ::3] = [-1, -1, 0]  # augmentation placeholders
    kpts[1, 4] = [-1.7, 30, 0.9]  # int(-1.7) == -1: skipped by the train rule despite its score
    expected = reference_humansd(kpts, 64, 64, lambda j: int(j[0]) != -1 and int(j[1]) != -1 and j[2] > 0.02)
    np.testing.assert_array_equal(draw_humansd_skeleton(kpts, 64, 64, rule="train"), expected)


def test_train_rule_skips_minus_one_but_inference_draws_it() -> None:
    kpts = single_limb(0, 1, (-1.5, 30.0), (40.0, 30.0))
    assert draw_humansd_skeleton(kpts, 64, 64, rule=SkeletonRule.TRAIN).max() == 0
    assert draw_humansd_skeleton(kpts, 64, 64, rule=SkeletonRule.INFERENCE)[30, 20].tolist() == [219, 94, 86]


def test_default_thresholds_per_rule() -> None:
    kpts = single_limb(0, 1, (10.0, 30.0), (50.0, 30.0), score=0.03)
    assert draw_humansd_skeleton(kpts, 64, 64).max() == 0  # inference: 0.05
    assert draw_humansd_skeleton(kpts, 64, 64, rule="train").max() > 0  # train: 0.02


def test_limb_midpoint_has_limb_colour() -> None:
    out = draw_humansd_skeleton(single_limb(12, 14, (50.0, 50.0), (150.0, 50.0)), 100, 200)
    assert out[50, 100].tolist() == list(HUMANSD_COLORS[13])


@pytest.mark.parametrize("score", [0.0, 0.05, -1.0])
def test_joints_at_or_below_threshold_are_not_drawn(score: float) -> None:
    kpts = single_limb(0, 1, (10.0, 10.0), (50.0, 50.0))
    kpts[0, 1, 2] = score
    assert draw_humansd_skeleton(kpts, 64, 64, threshold=0.05).max() == 0
    assert draw_openpose_skeleton(kpts, 64, 64, threshold=0.05)[50, 50].max() == 0  # joint 1 (l_eye) not drawn


def test_empty_pose_is_black() -> None:
    empty = np.zeros((0, 17, 3), dtype=np.float32)
    for out in (draw_humansd_skeleton(empty, 40, 30), draw_openpose_skeleton(empty, 40, 30)):
        assert out.shape == (40, 30, 3) and out.dtype == np.uint8 and out.max() == 0
    assert render_pose_map(Pose(width=30, height=40)).max() == 0


def test_later_limbs_overdraw_earlier_ones() -> None:
    # Limbs 0 (nose-l_eye) and 1 (nose-r_eye) share the nose: limb 1 is drawn last.
    kpts = np.zeros((1, 17, 3), dtype=np.float32)
    kpts[0, [0, 1, 2]] = [[32, 32, 1], [10, 32, 1], [54, 32, 1]]
    assert draw_humansd_skeleton(kpts, 64, 64)[32, 32].tolist() == list(HUMANSD_COLORS[1])
    # Persons: a later person's early limb covers an earlier person's late limb.
    first = single_limb(14, 16, (32.0, 5.0), (32.0, 60.0))
    second = single_limb(0, 1, (5.0, 32.0), (60.0, 32.0))
    out = draw_humansd_skeleton(np.concatenate([first, second]), 64, 64)
    assert out[32, 32].tolist() == list(HUMANSD_COLORS[0])


def test_person_with_non_positive_sum_is_skipped() -> None:
    # The original's person test counts (-1, -1, 0) placeholders: this valid limb is never drawn.
    kpts = np.tile(np.array([-1, -1, 0], dtype=np.float32), (1, 17, 1))
    kpts[0, 0], kpts[0, 1] = [2, 2, 0.9], [3, 3, 0.9]
    assert draw_humansd_skeleton(kpts, 16, 16, rule="train").max() == 0


def test_canvas_is_copied() -> None:
    canvas = np.full((64, 64, 3), 7, dtype=np.uint8)
    out = draw_humansd_skeleton(single_limb(0, 1, (10.0, 10.0), (50.0, 10.0)), 64, 64, canvas=canvas)
    assert canvas.max() == 7 and out[60, 60].tolist() == [7, 7, 7] and out[10, 30].tolist() == [219, 94, 86]
    with pytest.raises(ValueError, match=r"canvas must be a \(64, 64, 3\) uint8 array; got \(32, 32, 3\)"):
        draw_humansd_skeleton(np.zeros((0, 17, 3)), 64, 64, canvas=canvas[:32, :32])


@pytest.mark.parametrize(
    ("kpts", "match"),
    [
        (np.zeros((17, 3)), r"shape \(persons, 17, 3\).*got \(17, 3\)"),
        (np.full((1, 17, 3), np.nan), "NaN or infinite"),
        (np.full((1, 17, 3), 1e9), "within"),
    ],
)
def test_renderers_reject_bad_keypoints(kpts: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        draw_humansd_skeleton(kpts, 8, 8)
    with pytest.raises(ValueError, match=match):
        draw_openpose_skeleton(kpts, 8, 8)


def test_renderers_reject_bad_sizes() -> None:
    with pytest.raises(ValueError, match="height must be a positive integer; got 0"):
        draw_humansd_skeleton(np.zeros((0, 17, 3)), 0, 8)
    with pytest.raises(ValueError, match="width must be a positive integer; got 8.0"):
        draw_openpose_skeleton(np.zeros((0, 17, 3)), 8, 8.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 3])
def test_openpose_matches_reference(seed: int) -> None:
    kpts = random_people(2, 96, 128, seed)
    kpts[1, 5, 2] = 0.01  # no neck for the second person
    np.testing.assert_array_equal(draw_openpose_skeleton(kpts, 96, 128), reference_openpose(kpts, 96, 128, 0.05))


def test_openpose_as_float_is_the_float_canvas() -> None:
    kpts = random_people(1, 64, 64, seed=5)
    as_float = draw_openpose_skeleton(kpts, 64, 64, as_float=True)
    assert as_float.dtype == np.float64
    np.testing.assert_array_equal(as_float.astype(np.uint8), draw_openpose_skeleton(kpts, 64, 64))


def test_openpose_joint_and_neck() -> None:
    kpts = np.zeros((1, 17, 3), dtype=np.float32)
    kpts[0, 5], kpts[0, 6] = [40, 20, 0.9], [20, 20, 0.9]  # both shoulders: neck at (30, 20)
    out = draw_openpose_skeleton(kpts, 64, 64)
    assert out[20, 30].tolist() == list(OPENPOSE_COLORS[1])  # neck dot drawn over the limbs
    kpts[0, 6, 2] = 0.05  # right shoulder at threshold: no neck, no limbs, only the left shoulder dot
    out = draw_openpose_skeleton(kpts, 64, 64)
    assert out[20, 30].max() == 0 and out[20, 40].tolist() == list(OPENPOSE_COLORS[5])


def test_render_pose_map_filters_persons_and_dispatches_style() -> None:
    kpts = random_people(2, 64, 64, seed=7)
    pose = Pose([Person(kpts[0], score=0.9), Person(kpts[1], score=0.05)], width=64, height=64)
    np.testing.assert_array_equal(render_pose_map(pose), draw_humansd_skeleton(kpts[:1], 64, 64))
    np.testing.assert_array_equal(
        render_pose_map(pose, style="openpose"), draw_openpose_skeleton(kpts[:1], 64, 64, threshold=0.05)
    )
    assert render_pose_map(pose, style=SkeletonStyle.HUMANSD, threshold=0.01).shape == (64, 64, 3)


def test_overlay_pastes_non_black_pixels() -> None:
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    pose_map = np.zeros((4, 4, 3), dtype=np.uint8)
    pose_map[1, 2] = [200, 0, 0]
    out = overlay_skeleton(image, pose_map)
    assert out[1, 2].tolist() == [200, 0, 0]
    assert (out[np.arange(4) != 1] == 100).all() and image[1, 2].tolist() == [100, 100, 100]
    assert overlay_skeleton(image, pose_map, alpha=0.5)[1, 2].tolist() == [150, 50, 50]


def test_overlay_resizes_pose_map() -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    pose_map = np.zeros((4, 4, 3), dtype=np.uint8)
    pose_map[0, 0] = [1, 2, 3]
    out = overlay_skeleton(image, pose_map)
    assert out.shape == (8, 8, 3) and out[:2, :2].tolist() == [[[1, 2, 3]] * 2] * 2 and out[2:].max() == 0


def test_overlay_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"pose_map must be an \(H, W, 3\) uint8 array; got \(4, 4\) float64"):
        overlay_skeleton(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]; got 2"):
        overlay_skeleton(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), alpha=2)


def test_line_width_scales_the_skeleton_for_small_canvases():
    kpts = np.zeros((1, 17, 3), np.float32)
    kpts[0, 5] = (10, 20, 1.0)
    kpts[0, 7] = (50, 20, 1.0)  # left shoulder -> left elbow, a horizontal limb
    thin = draw_humansd_skeleton(kpts, 64, 64, line_width=2)
    wide = draw_humansd_skeleton(kpts, 64, 64)
    assert thin[:, 30].any(axis=1).sum() < wide[:, 30].any(axis=1).sum()
    assert thin[20, 30].any() and not thin[25, 30].any()
    with pytest.raises(ValueError, match="line_width must be a positive integer"):
        draw_humansd_skeleton(kpts, 64, 64, line_width=0)
