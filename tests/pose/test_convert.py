"""COCO-17 <-> OpenPose conversions, the generation-size rule and pose rescaling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ldm.pose.convert import (
    COCO_FROM_OPENPOSE18,
    OPENPOSE18_FROM_COCO,
    OPENPOSE18_KEYPOINT_NAMES,
    coco_to_openpose18,
    openpose_to_coco,
    rescale_pose,
    resize_for_generation,
    resize_image,
    resize_image_and_pose,
)
from ldm.pose.keypoints import COCO_KEYPOINT_NAMES, Person, Pose


def _distinct_coco(persons: int = 1) -> np.ndarray:
    """(P, 17, 3) with joint j of person p at (10 j + p, 100 + j, 0.5 + j / 100)."""
    j = np.arange(17, dtype=np.float32)
    one = np.stack([10 * j, 100 + j, 0.5 + j / 100], axis=1)
    return np.stack([one + [p, 0, 0] for p in range(persons)]).astype(np.float32)


def test_openpose18_table_matches_joint_names() -> None:
    for op_index, coco_index in enumerate(OPENPOSE18_FROM_COCO):
        if coco_index is None:
            assert OPENPOSE18_KEYPOINT_NAMES[op_index] == "neck"
        else:
            assert OPENPOSE18_KEYPOINT_NAMES[op_index] == COCO_KEYPOINT_NAMES[coco_index]
    for coco_index, op_index in enumerate(COCO_FROM_OPENPOSE18):
        assert OPENPOSE18_KEYPOINT_NAMES[op_index] == COCO_KEYPOINT_NAMES[coco_index]


def test_coco_to_openpose18_copies_joints_per_spec_table() -> None:
    coco = _distinct_coco(persons=2)
    op = coco_to_openpose18(coco)
    assert op.shape == (2, 18, 3) and op.dtype == np.float32
    # Spec 5.5 table: OpenPose idx -> COCO src.
    spec = {0: 0, 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 11: 11, 12: 13, 13: 15, 14: 2, 15: 1}
    spec |= {16: 4, 17: 3}
    for op_index, coco_index in spec.items():
        np.testing.assert_array_equal(op[:, op_index], coco[:, coco_index])


def test_neck_is_shoulder_mean_when_both_shoulders_pass() -> None:
    coco = _distinct_coco()
    op = coco_to_openpose18(coco, threshold=0.05)
    expected = (coco[0, 6] + coco[0, 5]) / 2
    np.testing.assert_array_equal(op[0, 1], expected)  # mean of x, y and score


@pytest.mark.parametrize("low_shoulder", [5, 6])
@pytest.mark.parametrize("score", [0.0, 0.05])  # 0.05 == threshold: the rule is strict
def test_neck_placeholder_when_a_shoulder_fails(low_shoulder: int, score: float) -> None:
    coco = _distinct_coco()
    coco[0, low_shoulder, 2] = score
    op = coco_to_openpose18(coco, threshold=0.05)
    np.testing.assert_array_equal(op[0, 1], [-1, -1, 0])


def test_openpose18_round_trip() -> None:
    coco = _distinct_coco(persons=3)
    np.testing.assert_array_equal(openpose_to_coco(coco_to_openpose18(coco)), coco)


def test_body25_maps_to_coco() -> None:
    body25 = np.zeros((1, 25, 3), dtype=np.float32)
    body25[0, :, 0] = np.arange(25)  # x = BODY_25 index
    coco = openpose_to_coco(body25)
    # BODY_25: 2 RShoulder, 5 LShoulder, 8 MidHip, 9 RHip, 11 RAnkle, 12 LHip, 15 REye, 16 LEye, 17 REar, 18 LEar.
    expected = {0: 0, 1: 16, 2: 15, 3: 18, 4: 17, 5: 5, 6: 2, 11: 12, 12: 9, 16: 11, 15: 14}
    for coco_index, body25_index in expected.items():
        assert coco[0, coco_index, 0] == body25_index
    assert 8 not in coco[0, :, 0]  # mid-hip dropped


@pytest.mark.parametrize("shape", [(17, 3), (1, 18, 3), (2, 17, 2)])
def test_coco_to_openpose18_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"shape \(persons, 17, 3\).*got"):
        coco_to_openpose18(np.zeros(shape))


def test_openpose_to_coco_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(persons, 18 or 25, 3\); got \(1, 17, 3\)"):
        openpose_to_coco(np.zeros((1, 17, 3)))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((512, 512), (512, 512)),
        ((768, 1024), (512, 704)),  # k = 2/3: 682.67 / 64 = 10.67 -> 11
        ((1024, 768), (704, 512)),
        ((1080, 1920), (512, 896)),  # 910.2 / 64 = 14.2 -> 14
        ((256, 256), (512, 512)),
        ((300, 500), (512, 832)),  # upscaling: 853.3 / 64 = 13.3 -> 13
        ((512, 544), (512, 512)),  # 8.5 rounds half to even -> 8
        ((512, 608), (512, 640)),  # 9.5 rounds half to even -> 10
    ],
)
def test_resize_for_generation_rule(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert resize_for_generation(*size) == expected


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_resize_for_generation_rejects_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="height must be a positive integer; got"):
        resize_for_generation(bad, 512)  # type: ignore[arg-type]


def test_resize_image_interpolation_matches_original() -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)  # upscale -> LANCZOS4
    np.testing.assert_array_equal(resize_image(small), cv2.resize(small, (640, 512), interpolation=cv2.INTER_LANCZOS4))
    large = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)  # downscale -> AREA
    np.testing.assert_array_equal(resize_image(large), cv2.resize(large, (704, 512), interpolation=cv2.INTER_AREA))


def test_rescale_pose_scales_visible_joints_and_bbox() -> None:
    kpts = np.array([[10, 20, 0.9]] * 16 + [[-1, -1, 0]], dtype=np.float32)
    pose = Pose([Person(kpts, score=0.7, bbox=(1, 2, 3, 4))], width=100, height=200)
    out = rescale_pose(pose, 200, 100)
    assert (out.width, out.height) == (200, 100)
    np.testing.assert_allclose(out.persons[0].keypoints[0], [20, 10, 0.9])
    np.testing.assert_array_equal(out.persons[0].keypoints[16], [-1, -1, 0])  # placeholder untouched
    assert out.persons[0].bbox == (2, 1, 6, 2) and out.persons[0].score == pytest.approx(0.7)
    assert pose.persons[0].keypoints[0, 0] == 10  # input not modified


def test_rescale_pose_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="new size must be positive; got 0x10"):
        rescale_pose(Pose(), 0, 10)


def test_resize_image_and_pose() -> None:
    image = np.zeros((768, 1024, 3), dtype=np.uint8)
    kpts = np.full((17, 3), [512, 384, 1.0], dtype=np.float32)
    resized, pose = resize_image_and_pose(image, Pose([Person(kpts)], width=1024, height=768))
    assert resized.shape == (512, 704, 3)
    assert (pose.width, pose.height) == (704, 512)
    np.testing.assert_allclose(pose.persons[0].keypoints[0], [352, 256, 1.0])


def test_resize_image_and_pose_rejects_size_mismatch() -> None:
    with pytest.raises(ValueError, match="pose is for a 512x512 image but the image is 1024x768"):
        resize_image_and_pose(np.zeros((768, 1024, 3), dtype=np.uint8), Pose())
