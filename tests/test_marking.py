"""Left-limb marking metric (ldm.metrics.marking): synthetic figures with known tones, and the mannequin world drawn
with and without its marking."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ldm.data.mannequin import write_mannequin_world
from ldm.data.mannequin.world import VALIDATION_MAPPING
from ldm.metrics.marking import marking_contrast, marking_metrics, side_difference
from ldm.pose.io import read_humansd_npz
from ldm.pose.keypoints import Person, Pose

LEFT = ((5, 7), (7, 9), (11, 13), (13, 15))
RIGHT = ((6, 8), (8, 10), (12, 14), (14, 16))


def _keypoints() -> np.ndarray:
    kpts = np.zeros((17, 3), dtype=np.float32)
    joints = {0: (32, 10), 5: (40, 20), 6: (24, 20), 7: (44, 30), 8: (20, 30), 9: (46, 40), 10: (18, 40)}
    joints |= {11: (38, 38), 12: (26, 38), 13: (40, 48), 14: (24, 48), 15: (41, 58), 16: (23, 58)}
    for joint, (x, y) in joints.items():
        kpts[joint] = (x, y, 1.0)
    return kpts


def _figure(left_rgb, right_rgb, kpts=None) -> np.ndarray:
    kpts = _keypoints() if kpts is None else kpts
    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    for segments, rgb in ((LEFT, left_rgb), (RIGHT, right_rgb)):
        for a, b in segments:
            cv2.line(image, tuple(int(v) for v in kpts[a, :2]), tuple(int(v) for v in kpts[b, :2]), rgb, 3)
    return image


def test_contrast_is_one_for_the_same_marking_minus_one_mirrored_zero_unmarked():
    kpts = _keypoints()
    reference = _figure((120, 0, 0), (240, 0, 0))
    np.testing.assert_allclose(side_difference(reference, kpts), [-120, 0, 0])
    assert marking_contrast(reference, reference, kpts) == pytest.approx(1.0)
    assert marking_contrast(_figure((240, 0, 0), (120, 0, 0)), reference, kpts) == pytest.approx(-1.0)
    assert marking_contrast(_figure((240, 0, 0), (240, 0, 0)), reference, kpts) == pytest.approx(0.0)
    assert marking_contrast(_figure((180, 0, 0), (240, 0, 0)), reference, kpts) == pytest.approx(0.5)
    # another hue for the marking still counts along the reference's difference only
    assert marking_contrast(_figure((120, 60, 0), (240, 60, 0)), reference, kpts) == pytest.approx(1.0)


def test_undefined_cases_give_none_and_bad_sizes_raise():
    kpts = _keypoints()
    reference = _figure((120, 0, 0), (240, 0, 0))
    faint = _figure((235, 0, 0), (240, 0, 0))  # 5 levels: below MIN_REFERENCE_CONTRAST
    assert marking_contrast(reference, faint, kpts) is None
    hidden = kpts.copy()
    hidden[9, 2] = 0  # left wrist unlabelled
    assert side_difference(reference, hidden) is None and marking_contrast(reference, reference, hidden) is None
    outside = kpts.copy()
    outside[[5, 7, 9, 11, 13, 15], 0] += 100  # the whole left side off the image
    assert side_difference(reference, outside) is None
    with pytest.raises(ValueError, match="differ in size"):
        marking_contrast(reference[:32], reference, kpts)
    with pytest.raises(ValueError, match="2 images, 1 references"):
        marking_metrics([reference, reference], [reference], [Pose([Person(kpts)], width=64, height=64)])


def test_metrics_skip_multi_figure_images_and_report_the_median():
    kpts = _keypoints()
    reference = _figure((120, 0, 0), (240, 0, 0))
    one = Pose([Person(kpts)], width=64, height=64)
    two = Pose([Person(kpts), Person(kpts)], width=64, height=64)
    images = [reference, _figure((240, 0, 0), (120, 0, 0)), _figure((180, 0, 0), (240, 0, 0)), reference]
    m = marking_metrics(images, [reference] * 4, [one, one, one, two])
    assert m == {"marking figures": 3, "marking agreement": pytest.approx(2 / 3), "marking contrast": 0.5}
    assert marking_metrics([reference], [reference], [two])["marking agreement"] is None


def test_the_world_marks_left_limbs_and_the_unmarked_world_does_not(tmp_path):
    """Same seed with and without the marking: same scenes and labels, so the marked renders are the reference."""
    worlds = {}
    for marked in (True, False):
        root = tmp_path / f"world-{marked}"
        write_mannequin_world(root, 120, size=128, seed=5, val_fraction=0.5, mark_left=marked)
        entries = json.loads((root / VALIDATION_MAPPING).read_text()).values()
        images = [cv2.cvtColor(cv2.imread(str(root / e["img_path"])), cv2.COLOR_BGR2RGB) for e in entries]
        worlds[marked] = (images, [read_humansd_npz(root / e["pose_path"]) for e in entries])
    (marked_images, poses), (plain_images, plain_poses) = worlds[True], worlds[False]
    assert all(
        np.array_equal(a.persons[0].keypoints, b.persons[0].keypoints) for a, b in zip(poses, plain_poses, strict=True)
    )
    itself = marking_metrics(marked_images, marked_images, poses)
    assert itself["marking figures"] >= 10 and itself["marking agreement"] == 1.0
    assert itself["marking contrast"] == pytest.approx(1.0)
    unmarked = marking_metrics(plain_images, marked_images, poses)
    assert unmarked["marking figures"] == itself["marking figures"]
    assert abs(unmarked["marking contrast"]) < 0.25 and unmarked["marking agreement"] < 0.8, unmarked
