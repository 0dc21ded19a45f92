"""MediaPipe detector: landmark mapping with a fake backend, the install hint, and a real run when available."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ldm.pose import mediapipe_detector
from ldm.pose.keypoints import COCO_KEYPOINT_NAMES
from ldm.pose.mediapipe_detector import BLAZEPOSE_FROM_COCO, MediaPipeDetector

# BlazePose landmark names (mediapipe.solutions.pose.PoseLandmark), indices 0-28.
BLAZEPOSE_NAMES = {
    0: "nose",
    2: "left_eye",
    5: "right_eye",
    7: "left_ear",
    8: "right_ear",
    11: "left_shoulder",
    12: "right_shoulder",
    13: "left_elbow",
    14: "right_elbow",
    15: "left_wrist",
    16: "right_wrist",
    23: "left_hip",
    24: "right_hip",
    25: "left_knee",
    26: "right_knee",
    27: "left_ankle",
    28: "right_ankle",
}


class _FakePose:
    """Stands in for mediapipe.solutions.pose.Pose; landmark i sits at (i / 40, i / 30) with visibility 0.5."""

    def __init__(self, landmarks: list | None, **kwargs: object) -> None:
        self.kwargs, self.landmarks, self.closed = kwargs, landmarks, False

    def process(self, image: np.ndarray) -> SimpleNamespace:
        assert image.dtype == np.uint8 and image.shape[2] == 3
        found = None if self.landmarks is None else SimpleNamespace(landmark=self.landmarks)
        return SimpleNamespace(pose_landmarks=found)

    def close(self) -> None:
        self.closed = True


def _fake_mediapipe(monkeypatch: pytest.MonkeyPatch, landmarks: list | None) -> list[_FakePose]:
    created: list[_FakePose] = []

    def factory(**kwargs: object) -> _FakePose:
        created.append(_FakePose(landmarks, **kwargs))
        return created[-1]

    fake = SimpleNamespace(solutions=SimpleNamespace(pose=SimpleNamespace(Pose=factory)))
    monkeypatch.setitem(sys.modules, "mediapipe", fake)
    return created


def test_mapping_table_uses_subject_left_right() -> None:
    names = [BLAZEPOSE_NAMES[i] for i in BLAZEPOSE_FROM_COCO]
    assert tuple(names) == COCO_KEYPOINT_NAMES


def test_fake_backend_mapping_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    landmarks = [SimpleNamespace(x=i / 40, y=i / 30, visibility=0.5) for i in range(33)]
    created = _fake_mediapipe(monkeypatch, landmarks)
    with MediaPipeDetector() as detector:
        (person,) = detector.detect(np.zeros((60, 80, 3), dtype=np.uint8))
    assert created[0].kwargs["model_complexity"] == 1 and created[0].kwargs["static_image_mode"] is True
    assert created[0].closed
    kpts = person.keypoints
    np.testing.assert_allclose(kpts[5], [11 / 40 * 80, 11 / 30 * 60, 0.5])  # COCO left shoulder <- BlazePose 11
    np.testing.assert_allclose(kpts[6, :2], [12 / 40 * 80, 12 / 30 * 60])
    # BlazePose 27/28 (ankles) lie at y = 0.9 H, inside; landmarks at y >= 1 would be outside.
    assert (kpts[:, 2] == 0.5).all() and person.score == pytest.approx(0.5)


def test_fake_backend_outside_joints_and_no_person(monkeypatch: pytest.MonkeyPatch) -> None:
    landmarks = [SimpleNamespace(x=0.5, y=1.2 if i >= 25 else 0.5, visibility=0.9) for i in range(33)]
    _fake_mediapipe(monkeypatch, landmarks)
    (person,) = MediaPipeDetector().detect(np.zeros((10, 10, 3), dtype=np.uint8))
    assert person.keypoints[13:, 2].tolist() == [0, 0, 0, 0] and (person.keypoints[:13, 2] > 0.89).all()
    _fake_mediapipe(monkeypatch, None)
    assert MediaPipeDetector().detect(np.zeros((10, 10, 3), dtype=np.uint8)) == []


def test_missing_mediapipe_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError
    with pytest.raises(ImportError, match=r"pip install -r requirements-mediapipe.txt && pip install --no-deps"):
        MediaPipeDetector()
    assert "mediapipe==0.10.21" in mediapipe_detector.INSTALL_HINT


def test_bad_confidence(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mediapipe(monkeypatch, None)
    with pytest.raises(ValueError, match=r"min_detection_confidence must be in \[0, 1\]; got 1.5"):
        MediaPipeDetector(min_detection_confidence=1.5)


@pytest.fixture(scope="module")
def real_detector():
    pytest.importorskip("mediapipe", reason="optional: pip install -r requirements-mediapipe.txt (see README)")
    with MediaPipeDetector() as detector:
        yield detector


def test_real_no_person_on_blank_image(real_detector: MediaPipeDetector) -> None:
    assert real_detector.detect(np.zeros((128, 128, 3), dtype=np.uint8)) == []


def test_real_person_photo(real_detector: MediaPipeDetector) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"  # 512x600 portrait, facing us
    if not photo.is_file():
        pytest.skip(f"no sample portrait shipped with this matplotlib ({photo} missing)")
    (person,) = real_detector.detect(photo)
    kpts = person.keypoints
    assert 200 < kpts[0, 0] < 330 and 150 < kpts[0, 1] < 300 and kpts[0, 2] > 0.9  # nose on the face
    assert kpts[5, 0] > kpts[6, 0] and kpts[1, 0] > kpts[2, 0]  # subject's left is image right
    assert (kpts[5:7, 2] > 0.9).all() and (kpts[13:, 2] == 0).all()  # knees / ankles are below the frame
