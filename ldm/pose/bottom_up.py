"""Bottom-up associative-embedding decoding of HigherHRNet outputs, as in MMPose 0.29's test path.

Pure functions on tensors and arrays; :class:`ldm.pose.estimator.PoseEstimator` chains them. The numbered steps
below are referred to as ``# (n)`` in the code.

1. Stage aggregation: the 1/4 heatmaps are resized (bilinear, ``align_corners``) to the 1/2 heatmaps' size and
   the two stages are averaged.
2. Flip test: the horizontally flipped image's outputs are flipped back and their joint channels swapped with
   ``COCO_FLIP_INDEX``; heatmaps are averaged with the unflipped ones, tags are stacked as a second embedding
   dimension (L = 2).
3. Tags (1/4 resolution) are resized (bilinear, ``align_corners``) to the heatmap size.
4. Candidates: max-pool NMS (kernel 5, padding 2), then the top k = ``max_num_people`` peaks of every joint.
5. Grouping: joints are visited in MMPose's order (head, shoulders, hips, then limbs); candidates above
   ``detection_threshold`` are matched to the persons found so far by the Hungarian algorithm on the distance
   between the candidate's tag and each person's mean tag (cost ``round(distance) * 100 - score`` with
   ``use_detection_val``); a match farther than ``tag_threshold`` starts a new person.
6. Adjust: sub-pixel refinement. With UDP, one Newton step on the log of the 3x3-blurred heatmap (DARK);
   without UDP, a quarter-pixel shift toward the higher neighbour and a +0.5 pixel-centre offset.
7. Person score: mean of the K joint scores (missing joints count 0), taken before step 8.
8. Refine: every missing joint of a person is filled with the argmax of ``heatmap - round(tag distance to the
   person's mean tag)`` plus a quarter-pixel shift.
9. Heatmap coordinates are mapped back to the input image (UDP: ``x_img = x_hm * scale / (W_hm - 1)``).

Pre-processing (the inverse of step 9): the short side is resized to ``input_size`` and the long side to the same
scale rounded up to a multiple of ``size_divisor`` (zero padding at the right/bottom); see
:func:`ldm.pose.resize.compute_resize`, which also holds the mapping of step 9.

Deliberate differences from MMPose (documented at the place they occur): the Hungarian solver is SciPy's
``linear_sum_assignment`` (MMPose used ``munkres``; both are exact, ties may break differently); the DARK step
never modifies the caller's heatmaps (MMPose's CPU path blurs and logs them in place, which then corrupts step 8;
its GPU path does not) and a singular Hessian gives a zero step instead of ``LinAlgError``.

References:
    Newell et al., "Associative Embedding", NeurIPS 2017.
    Cheng et al., "HigherHRNet", CVPR 2020.
    Huang et al., "The Devil is in the Details: Delving into Unbiased Data Processing for Human Pose
    Estimation", CVPR 2020 (UDP).
    Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose Estimation", CVPR 2020 (DARK).
    Behaviour reference: open-mmlab/mmpose v0.29.0, mmpose/core/post_processing/group.py,
    mmpose/core/evaluation/bottom_up_eval.py, mmpose/models/detectors/associative_embedding.py,
    mmpose/datasets/pipelines/bottom_up_transform.py (read as a specification; no code copied).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ldm.pose.keypoints import COCO_FLIP_INDEX, NUM_KEYPOINTS

logger = logging.getLogger(__name__)

# MMPose's grouping order for COCO-17: head and shoulders, then hips, then arms and legs (0-based joint ids).
COCO_GROUPING_ORDER: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)

# Cost given to the dummy columns that make the assignment square when there are more candidates than persons.
_UNMATCHED_COST = 1e10


@dataclass(frozen=True)
class BottomUpConfig:
    """Test-time settings of the bottom-up decoder (defaults = ``higherhrnet_w48_coco_512x512_udp.py``).

    Args:
        max_num_people: k of the per-joint top-k and the number of persons returned at most.
        detection_threshold: a candidate joint takes part in grouping only if its heatmap value exceeds this.
        tag_threshold: largest tag distance at which a candidate joins an existing person.
        nms_kernel: max-pool window of the heatmap NMS. nms_padding: its padding.
        use_detection_val: grouping cost ``round(distance) * 100 - score`` (else the plain distance).
        ignore_too_much: match new candidates only against the first ``max_num_people`` persons and drop later ones.
        adjust: sub-pixel refinement of grouped joints (step 6). refine: fill missing joints (step 8).
        flip_test: average with the horizontally flipped image.
        use_udp: unbiased data processing (resize/mapping with ``side - 1`` scales, DARK adjustment).
        align_corners: bilinear resizing convention of steps 1 and 3.
        input_size: short side of the network input. size_divisor: the long side is rounded up to a multiple.
    """

    max_num_people: int = 30
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    nms_kernel: int = 5
    nms_padding: int = 2
    use_detection_val: bool = True
    ignore_too_much: bool = False
    adjust: bool = True
    refine: bool = True
    flip_test: bool = True
    use_udp: bool = True
    align_corners: bool = True
    input_size: int = 512
    size_divisor: int = 64

    def __post_init__(self) -> None:
        if self.max_num_people < 1:
            raise ValueError(f"BottomUpConfig.max_num_people must be >= 1; got {self.max_num_people}.")
        if self.detection_threshold < 0 or self.tag_threshold <= 0:
            raise ValueError(
                f"BottomUpConfig needs detection_threshold >= 0 and tag_threshold > 0; got "
                f"{self.detection_threshold} and {self.tag_threshold}."
            )
        if self.nms_kernel < 1 or not 0 <= self.nms_padding <= self.nms_kernel // 2:
            raise ValueError(
                f"BottomUpConfig.nms_padding must be in [0, nms_kernel // 2] with nms_kernel >= 1; got kernel "
                f"{self.nms_kernel}, padding {self.nms_padding} (the reference uses 5 and 2)."
            )
        if self.size_divisor < 32 or self.size_divisor % 32:
            raise ValueError(
                f"BottomUpConfig.size_divisor must be a positive multiple of 32 (the network's total stride); "
                f"got {self.size_divisor}."
            )
        if self.input_size < self.size_divisor:
            raise ValueError(
                f"BottomUpConfig.input_size must be >= size_divisor ({self.size_divisor}); got {self.input_size}."
            )

    def with_changes(self, changes: Mapping[str, Any]) -> BottomUpConfig:
        """A copy with some fields changed (e.g. parsed ``key=value`` options), type-checked and validated.

        Raises:
            ValueError: an unknown field (the message lists the valid ones), a value of the wrong type (ints are
                accepted for float fields), or an invalid combination (``__post_init__``).
        """
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ValueError(f"Unknown decoder setting(s) {unknown}; valid ones are {valid}.")
        for key, value in changes.items():
            kind = type(getattr(self, key))
            allowed = (int, float) if kind is float else kind
            if isinstance(value, bool) is not (kind is bool) or not isinstance(value, allowed):
                raise ValueError(f"Decoder setting {key} must be {kind.__name__}; got {value!r}.")
        return dataclasses.replace(
            self, **{k: (float(v) if type(getattr(self, k)) is float else v) for k, v in changes.items()}
        )


# ---------------------------------------------------------------------------------------------------------------------
# Steps 1-3: output aggregation


def aggregate_stages(
    quarter: torch.Tensor, half: torch.Tensor, *, num_joints: int = NUM_KEYPOINTS, align_corners: bool = True
) -> torch.Tensor:
    """(1) Average the two stages' heatmaps at the higher resolution.

    Args:
        quarter: (B, 2K, H/4, W/4) first output (heatmaps then tags); only the K heatmaps are used.
        half: (B, K, H/2, W/2) second output.
        num_joints: K.
        align_corners: bilinear convention (True in the reference config and in HumanSD's training loss).

    Returns:
        (B, K, H/2, W/2) heatmaps.
    """
    heatmaps = F.interpolate(
        quarter[:, :num_joints], size=half.shape[-2:], mode="bilinear", align_corners=align_corners
    )
    return (heatmaps + half) / 2


def flip_back(maps: torch.Tensor, flip_index: Sequence[int] = COCO_FLIP_INDEX) -> torch.Tensor:
    """Undo a horizontal image flip on per-joint maps: mirror the width axis and swap left/right channels.

    Args:
        maps: (B, K, H, W) maps predicted on flipped images.
        flip_index: channel k of the result is channel ``flip_index[k]`` of the input.

    Returns:
        (B, K, H, W) maps aligned with the unflipped image.
    """
    return maps.flip(3)[:, list(flip_index)]


def aggregate_outputs(
    outputs: Sequence[torch.Tensor],
    flipped_outputs: Sequence[torch.Tensor] | None = None,
    *,
    num_joints: int = NUM_KEYPOINTS,
    flip_index: Sequence[int] = COCO_FLIP_INDEX,
    align_corners: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1)-(3) Turn raw network outputs (optionally with a flip-test pass) into decoding inputs.

    Args:
        outputs: ``(quarter (B, 2K, h, w), half (B, K, 2h, 2w))`` for the images.
        flipped_outputs: the same for the horizontally flipped images, or None (no flip test).
        num_joints: K.
        flip_index: left/right channel permutation (COCO-17 by default).
        align_corners: bilinear convention for the stage and tag resizing.

    Returns:
        heatmaps: (B, K, 2h, 2w). tags: (B, K, 2h, 2w, L), L = 2 with flip test, else 1.
    """
    quarter, half = outputs
    heatmaps = aggregate_stages(quarter, half, num_joints=num_joints, align_corners=align_corners)  # (1)
    tags = [quarter[:, num_joints : 2 * num_joints]]
    if flipped_outputs is not None:  # (2)
        f_quarter, f_half = flipped_outputs
        f_heat_quarter = flip_back(f_quarter[:, :num_joints], flip_index)
        f_heat = aggregate_stages(
            f_heat_quarter, flip_back(f_half, flip_index), num_joints=num_joints, align_corners=align_corners
        )
        heatmaps = (heatmaps + f_heat) / 2
        tags.append(flip_back(f_quarter[:, num_joints : 2 * num_joints], flip_index))
    stacked = torch.stack(tags, dim=1)  # (B, L, K, h, w)
    b, n_emb, k, h, w = stacked.shape
    resized = F.interpolate(
        stacked.reshape(b, n_emb * k, h, w), size=heatmaps.shape[-2:], mode="bilinear", align_corners=align_corners
    )  # (3) (B, L*K, 2h, 2w)
    tags_out = resized.reshape(b, n_emb, k, *heatmaps.shape[-2:]).permute(0, 2, 3, 4, 1)  # (B, K, 2h, 2w, L)
    return heatmaps, tags_out.contiguous()


# ---------------------------------------------------------------------------------------------------------------------
# Step 4: candidates


class Candidates(NamedTuple):
    """Top-k peaks per joint.

    Attributes:
        locs: (K, M, 2) int64 (x, y) heatmap pixel of each peak.
        vals: (K, M) float32 heatmap value (0 for positions suppressed by NMS).
        tags: (K, M, L) float32 embedding at the peak.
    """

    locs: np.ndarray
    vals: np.ndarray
    tags: np.ndarray


def top_k_candidates(
    heatmaps: torch.Tensor, tags: torch.Tensor, *, k: int = 30, nms_kernel: int = 5, nms_padding: int = 2
) -> Candidates:
    """(4) Max-pool NMS, then the k highest peaks of every joint.

    Args:
        heatmaps: (K, H, W) aggregated heatmaps of one image.
        tags: (K, H, W, L) tag maps at the heatmap resolution.
        k: peaks per joint (``max_num_people``).
        nms_kernel: max-pool window. nms_padding: max-pool padding.

    Returns:
        :class:`Candidates` with M = min(k, H * W).
    """
    num_joints, height, width = heatmaps.shape
    pooled = F.max_pool2d(heatmaps[None], nms_kernel, stride=1, padding=nms_padding)[0]
    peaks = heatmaps * (pooled == heatmaps).to(heatmaps.dtype)  # keep local maxima only
    vals, ind = peaks.reshape(num_joints, -1).topk(min(k, height * width), dim=1)  # (K, M)
    flat_tags = tags.reshape(num_joints, height * width, -1)  # (K, H*W, L)
    tag_k = torch.gather(flat_tags, 1, ind[..., None].expand(-1, -1, flat_tags.shape[-1]))  # (K, M, L)
    locs = torch.stack([ind % width, ind // width], dim=-1)  # (K, M, 2) as (x, y)
    return Candidates(
        locs.cpu().numpy().astype(np.int64),
        vals.float().cpu().numpy(),
        tag_k.float().cpu().numpy(),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Step 5: grouping


def group_by_tags(
    candidates: Candidates,
    *,
    detection_threshold: float = 0.1,
    tag_threshold: float = 1.0,
    use_detection_val: bool = True,
    ignore_too_much: bool = False,
    max_num_people: int = 30,
    joint_order: Sequence[int] | None = None,
) -> np.ndarray:
    """(5) Group candidate joints into persons by associative-embedding tags.

    Persons are kept in creation order, keyed (as in the reference) by the first tag value of the joint that
    founded them: a new person whose key equals an existing key reuses that person's row. Matching a joint to a
    person appends its tag to the person's tag list; the person's tag is the mean of that list.

    Args:
        candidates: output of :func:`top_k_candidates`.
        detection_threshold: candidates with a value <= this are ignored.
        tag_threshold: a Hungarian match farther than this starts a new person instead.
        use_detection_val: cost ``round(distance) * 100 - value`` instead of ``distance``.
        ignore_too_much: only the first ``max_num_people`` persons are matched against and returned.
        max_num_people: see ``ignore_too_much``.
        joint_order: visiting order; :data:`COCO_GROUPING_ORDER` for K = 17, else 0..K-1.

    Returns:
        (P, K, 3 + L) float32 persons; row k = (x, y, score, tag...) in heatmap pixels, all zero if missing.
    """
    num_joints, _, emb_dim = candidates.tags.shape
    if joint_order is None:
        joint_order = COCO_GROUPING_ORDER if num_joints == NUM_KEYPOINTS else tuple(range(num_joints))
    persons: dict[float, np.ndarray] = {}
    person_tags: dict[float, list[np.ndarray]] = {}

    def _start_person(joint_id: int, joint: np.ndarray) -> None:
        key = float(joint[3])
        persons.setdefault(key, np.zeros((num_joints, 3 + emb_dim), np.float32))[joint_id] = joint
        person_tags[key] = [joint[3:].astype(np.float32)]

    for joint_id in joint_order:
        joints = np.concatenate(
            [candidates.locs[joint_id], candidates.vals[joint_id, :, None], candidates.tags[joint_id]], axis=1
        ).astype(np.float64)  # (M, 3 + L)
        joints = joints[joints[:, 2] > detection_threshold]
        if len(joints) == 0:
            continue
        if not persons:
            for joint in joints:
                _start_person(joint_id, joint)
            continue
        keys = list(persons)[:max_num_people] if ignore_too_much else list(persons)
        mean_tags = np.stack([np.mean(person_tags[key], axis=0) for key in keys])  # (P, L)
        dist = np.linalg.norm(joints[:, None, 3:] - mean_tags[None], axis=2)  # (N, P)
        cost = np.round(dist) * 100 - joints[:, 2:3] if use_detection_val else dist.copy()
        num_new, num_persons = dist.shape
        if num_new > num_persons:  # every candidate must get a column; dummy columns mean "new person"
            cost = np.concatenate([cost, np.full((num_new, num_new - num_persons), _UNMATCHED_COST)], axis=1)
        for row, col in zip(*linear_sum_assignment(cost)):
            if col < num_persons and dist[row, col] < tag_threshold:
                persons[keys[col]][joint_id] = joints[row]
                person_tags[keys[col]].append(joints[row, 3:].astype(np.float32))
            else:
                _start_person(joint_id, joints[row])

    keys = list(persons)[:max_num_people] if ignore_too_much else list(persons)
    if not keys:
        return np.zeros((0, num_joints, 3 + emb_dim), np.float32)
    return np.stack([persons[key] for key in keys]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Steps 6 and 8: sub-pixel adjustment and refinement


def adjust_dark_udp(coords: np.ndarray, heatmaps: np.ndarray, *, kernel: int = 3) -> np.ndarray:
    """(6, UDP) One Newton step on the log of the Gaussian-blurred heatmap at each integer peak (DARK).

    ``offset = H^-1 g`` with gradient g and Hessian H (+ float32 eps * I) from central differences on the
    edge-padded log heatmap; the coordinates move by ``-offset``.

    Args:
        coords: (P, K, 2) integer-valued (x, y) heatmap pixels (missing joints may hold 0).
        heatmaps: (K, H, W) heatmaps; not modified (MMPose's CPU path modifies them in place, see module doc).
        kernel: Gaussian blur window (sigma from OpenCV's rule: 0.8 for 3).

    Returns:
        (P, K, 2) float32 refined coordinates.
    """
    num_joints, height, width = heatmaps.shape
    blurred = np.stack([cv2.GaussianBlur(np.ascontiguousarray(h, np.float32), (kernel, kernel), 0) for h in heatmaps])
    log_h = np.log(np.clip(blurred, 0.001, 50))
    padded = np.pad(log_h, ((0, 0), (1, 1), (1, 1)), mode="edge")  # (K, H+2, W+2)
    px = np.clip(coords[..., 0].astype(np.int64), 0, width - 1) + 1  # (P, K) padded column
    py = np.clip(coords[..., 1].astype(np.int64), 0, height - 1) + 1
    kk = np.arange(num_joints)[None, :]

    def at(dx: int, dy: int) -> np.ndarray:
        return padded[kk, py + dy, px + dx]

    center = at(0, 0)
    grad_x = 0.5 * (at(1, 0) - at(-1, 0))
    grad_y = 0.5 * (at(0, 1) - at(0, -1))
    hxx = at(1, 0) - 2 * center + at(-1, 0)
    hyy = at(0, 1) - 2 * center + at(0, -1)
    hxy = 0.5 * (at(1, 1) - at(1, 0) - at(0, 1) + 2 * center - at(-1, 0) - at(0, -1) + at(-1, -1))
    eps = float(np.finfo(np.float32).eps)
    a, b, d = hxx.astype(np.float64) + eps, hxy.astype(np.float64), hyy.astype(np.float64) + eps
    det = a * d - b * b
    safe_det = np.where(det == 0, 1.0, det)
    # Closed-form 2x2 inverse; a singular Hessian (the reference would raise) gives no step.
    step_x = np.where(det == 0, 0.0, (d * grad_x - b * grad_y) / safe_det)
    step_y = np.where(det == 0, 0.0, (a * grad_y - b * grad_x) / safe_det)
    return (coords - np.stack([step_x, step_y], axis=-1)).astype(np.float32)


def _quarter_shift(heatmap: np.ndarray, x: int, y: int) -> tuple[float, float]:
    """+/-0.25 toward the higher horizontal and vertical neighbour (ties go negative), edges clamped."""
    height, width = heatmap.shape
    sx = 0.25 if heatmap[y, min(width - 1, x + 1)] > heatmap[y, max(0, x - 1)] else -0.25
    sy = 0.25 if heatmap[min(height - 1, y + 1), x] > heatmap[max(0, y - 1), x] else -0.25
    return sx, sy


def adjust_quarter_offset(poses: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """(6, non-UDP) Shift every detected joint a quarter pixel toward its higher neighbour, then by +0.5.

    Args:
        poses: (P, K, 3 + L) grouped persons (heatmap pixels).
        heatmaps: (K, H, W).

    Returns:
        A copy of ``poses`` with adjusted (x, y) for joints with a positive score.
    """
    out = poses.copy()
    for person in out:
        for joint_id, joint in enumerate(person):
            if joint[2] > 0:
                x, y = int(joint[0]), int(joint[1])
                sx, sy = _quarter_shift(heatmaps[joint_id], x, y)
                joint[0], joint[1] = joint[0] + sx + 0.5, joint[1] + sy + 0.5
    return out


def refine_missing_joints(
    pose: np.ndarray, heatmaps: np.ndarray, tags: np.ndarray, *, use_udp: bool = True
) -> np.ndarray:
    """(8) Fill the missing joints of one person from the tag-penalised heatmap maximum.

    The person's tag is the mean of the tag maps at its detected joints (truncated, clipped pixel positions).
    For each joint the location maximising ``heatmap - round(||tag - person_tag||)`` is found (first maximum in
    row-major order), shifted a quarter pixel toward the higher neighbour (+0.5 without UDP), and used if the
    joint was missing and the heatmap value there is positive.

    Args:
        pose: (K, 3 + L) one person (heatmap pixels).
        heatmaps: (K, H, W).
        tags: (K, H, W, L).
        use_udp: pixel-centre convention (no +0.5 with UDP).

    Returns:
        A copy of ``pose`` with filled (x, y, score) for previously missing joints (their tags stay 0).
    """
    _, height, width = heatmaps.shape
    out = pose.copy()
    detected = np.flatnonzero(out[:, 2] > 0)
    missing = np.flatnonzero(out[:, 2] == 0)
    if len(detected) == 0 or len(missing) == 0:
        return out
    xs = np.clip(np.trunc(out[detected, 0]).astype(np.int64), 0, width - 1)
    ys = np.clip(np.trunc(out[detected, 1]).astype(np.int64), 0, height - 1)
    person_tag = tags[detected, ys, xs].mean(axis=0)  # (L,)
    # Squared tag distance, accumulated per embedding dimension (much faster than reducing a length-L last axis);
    # only missing joints are evaluated since the reference discards the result for detected ones.
    dist2 = np.zeros((len(missing), height, width), np.float32)
    for dim, value in enumerate(person_tag):
        dist2 += (tags[missing, :, :, dim] - value) ** 2
    scored = heatmaps[missing] - np.round(np.sqrt(dist2))  # (n_missing, H, W)
    best = scored.reshape(len(missing), -1).argmax(axis=1)  # first maximum in row-major order
    offset = 0.0 if use_udp else 0.5
    for joint_id, flat in zip(missing, best):
        y, x = divmod(int(flat), width)
        val = heatmaps[joint_id, y, x]
        if val > 0:
            sx, sy = _quarter_shift(heatmaps[joint_id], x, y)
            out[joint_id, :3] = (x + offset + sx, y + offset + sy, val)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Steps 4-8 together


class DecodedPoses(NamedTuple):
    """Grouped persons of one image in heatmap coordinates.

    Attributes:
        poses: (P, K, 3 + L) float32 rows (x, y, score, tag...); x, y in heatmap pixels.
        scores: (P,) float32 person scores (mean joint score before refinement).
    """

    poses: np.ndarray
    scores: np.ndarray


def decode_poses(heatmaps: torch.Tensor, tags: torch.Tensor, config: BottomUpConfig | None = None) -> DecodedPoses:
    """(4)-(8) Decode one image's aggregated heatmaps and tags into persons.

    Args:
        heatmaps: (K, H, W) aggregated heatmaps.
        tags: (K, H, W, L) tag maps at the same resolution.
        config: decoder settings (defaults: the W48-UDP test config).

    Returns:
        :class:`DecodedPoses` in creation order (not sorted by score).
    """
    cfg = config or BottomUpConfig()
    if heatmaps.ndim != 3 or tags.ndim != 4 or tags.shape[:3] != heatmaps.shape:
        raise ValueError(
            f"decode_poses expects heatmaps (K, H, W) and tags (K, H, W, L) of the same K, H, W; got "
            f"{tuple(heatmaps.shape)} and {tuple(tags.shape)}."
        )
    heatmaps, tags = heatmaps.detach().float(), tags.detach().float()
    candidates = top_k_candidates(
        heatmaps, tags, k=cfg.max_num_people, nms_kernel=cfg.nms_kernel, nms_padding=cfg.nms_padding
    )  # (4)
    poses = group_by_tags(
        candidates,
        detection_threshold=cfg.detection_threshold,
        tag_threshold=cfg.tag_threshold,
        use_detection_val=cfg.use_detection_val,
        ignore_too_much=cfg.ignore_too_much,
        max_num_people=cfg.max_num_people,
    )  # (5)
    if len(poses) == 0:
        return DecodedPoses(poses, np.zeros(0, np.float32))
    heat_np = heatmaps.cpu().numpy()
    if cfg.adjust:  # (6)
        if cfg.use_udp:
            poses[..., :2] = adjust_dark_udp(poses[..., :2], heat_np)
        else:
            poses = adjust_quarter_offset(poses, heat_np)
    scores = poses[:, :, 2].mean(axis=1).astype(np.float32)  # (7)
    if cfg.refine:  # (8)
        tag_np = tags.cpu().numpy()
        poses = np.stack([refine_missing_joints(p, heat_np, tag_np, use_udp=cfg.use_udp) for p in poses])
    return DecodedPoses(poses.astype(np.float32), scores)
