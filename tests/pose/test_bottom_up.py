"""Associative-embedding decoding on synthetic heatmaps and tag maps rendered from known poses."""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment

from ldm.pose.bottom_up import (
    BottomUpConfig,
    adjust_dark_udp,
    adjust_quarter_offset,
    aggregate_outputs,
    aggregate_stages,
    decode_poses,
    flip_back,
    group_by_tags,
    refine_missing_joints,
    top_k_candidates,
)
from ldm.pose.keypoints import COCO_FLIP_INDEX, COCO_OKS_SIGMAS
from ldm.pose.resize import compute_resize, resize_for_network

logger = logging.getLogger(__name__)

IMAGE_W, IMAGE_H = 640, 480
# A standing person facing the camera: (x, y) in units of body height, origin at the top centre.
TEMPLATE = np.array(
    [
        [0.00, 0.05], [0.03, 0.03], [-0.03, 0.03], [0.06, 0.05], [-0.06, 0.05],
        [0.12, 0.18], [-0.12, 0.18], [0.16, 0.35], [-0.16, 0.35], [0.18, 0.50], [-0.18, 0.50],
        [0.08, 0.52], [-0.08, 0.52], [0.09, 0.74], [-0.09, 0.74], [0.10, 0.97], [-0.10, 0.97],
    ]
)  # fmt: skip


def make_persons(rng: np.random.Generator) -> np.ndarray:
    """(4, 17, 2) image-pixel poses of four separated people of different sizes."""
    persons = []
    for cx, top, height in ((100, 60, 260), (260, 150, 200), (420, 40, 300), (560, 120, 220)):
        pts = TEMPLATE * height + [cx, top]
        persons.append(pts + rng.uniform(-4, 4, pts.shape))
    return np.stack(persons)


def render_maps(
    poses_hm: np.ndarray,
    visible: np.ndarray,
    size: tuple[int, int],
    person_tags: np.ndarray,
    *,
    sigma: float = 2.0,
    tag_radius: float = 3.0,
    background_tags: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmaps (max over persons) and per-joint tag maps (person tag on a disc around each joint).

    Returns heatmaps (17, H, W) and tags (17, H, W, 2) (both embedding dims equal, like an ideal flip test).
    """
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    heat = np.zeros((17, height, width), np.float32)
    tags = np.zeros((17, height, width), np.float32) if background_tags is None else background_tags.copy()
    for p, pose in enumerate(poses_hm):
        for j, (x, y) in enumerate(pose):
            if not visible[p, j]:
                continue
            d2 = (xs - x) ** 2 + (ys - y) ** 2
            heat[j] = np.maximum(heat[j], np.exp(-d2 / (2 * sigma**2)))
            tags[j][d2 <= tag_radius**2] = person_tags[p]
    return heat, np.stack([tags, tags], axis=-1)


def image_to_heatmap(xy: np.ndarray, transform, hm_size: tuple[int, int]) -> np.ndarray:
    """Inverse of the UDP mapping of step 9."""
    factor = np.array([(hm_size[0] - 1) / transform.scale[0], (hm_size[1] - 1) / transform.scale[1]])
    return xy * factor


def decode_to_image(heat: np.ndarray, tags: np.ndarray, transform, hm_size) -> tuple[np.ndarray, np.ndarray]:
    decoded = decode_poses(torch.from_numpy(heat), torch.from_numpy(tags), BottomUpConfig())
    xy = transform.heatmap_to_image(decoded.poses[..., :2], *hm_size)
    return np.concatenate([xy, decoded.poses[..., 2:3]], axis=-1), decoded.scores


def coco_ap(gt_poses: np.ndarray, gt_visible: np.ndarray, det_poses: np.ndarray, det_scores: np.ndarray) -> float:
    """COCO keypoint AP (OKS, maxDets 20, COCO-17 sigmas) for one image."""
    anns = []
    for i, (pose, vis) in enumerate(zip(gt_poses, gt_visible)):
        kpts = np.concatenate([pose, 2.0 * vis[:, None]], axis=1)
        kpts[~vis, :2] = 0
        x0, y0 = pose[vis].min(axis=0)
        x1, y1 = pose[vis].max(axis=0)
        bbox = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
        anns.append(
            dict(id=i + 1, image_id=1, category_id=1, keypoints=kpts.ravel().tolist(), num_keypoints=int(vis.sum()),
                 bbox=bbox, area=bbox[2] * bbox[3], iscrowd=0)
        )  # fmt: skip
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "width": IMAGE_W, "height": IMAGE_H}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}],
    }
    dets = [
        dict(image_id=1, category_id=1, keypoints=pose.ravel().tolist(), score=float(score))
        for pose, score in zip(det_poses, det_scores)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets)
        evaluator = COCOeval(gt, dt, "keypoints")
        evaluator.params.maxDets = [20]
        evaluator.params.kpt_oks_sigmas = np.array(COCO_OKS_SIGMAS)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    transform = compute_resize(IMAGE_H, IMAGE_W)
    hm_size = (transform.input_width // 2, transform.input_height // 2)
    gt = make_persons(rng)
    return rng, transform, hm_size, gt


def match_to_gt(gt: np.ndarray, det: np.ndarray) -> np.ndarray:
    """Index of the detection assigned to each ground-truth person (mean joint distance)."""
    cost = np.linalg.norm(gt[:, None, :, :2] - det[None, :, :, :2], axis=-1).mean(axis=-1)
    rows, cols = linear_sum_assignment(cost)
    assert list(rows) == list(range(len(gt)))
    return cols


def test_clean_synthetic_poses_are_recovered_exactly(scene):
    _, transform, hm_size, gt = scene
    visible = np.ones(gt.shape[:2], bool)
    heat, tags = render_maps(image_to_heatmap(gt, transform, hm_size), visible, hm_size, np.array([1.0, 3.0, 5.0, 7.0]))
    det, scores = decode_to_image(heat, tags, transform, hm_size)

    assert det.shape == (4, 17, 3)
    cols = match_to_gt(gt, det)
    err = np.linalg.norm(det[cols, :, :2] - gt, axis=-1)
    assert err.max() < 1.0, f"max keypoint error {err.max():.3f} px"
    assert np.all(det[..., 2] > 0.5)
    np.testing.assert_allclose(scores, det[..., 2].mean(axis=1), rtol=1e-6)
    assert coco_ap(gt, visible, det, scores) == pytest.approx(1.0)


def test_noisy_occluded_synthetic_poses(scene):
    rng, transform, hm_size, gt = scene
    visible = rng.random(gt.shape[:2]) > 0.2  # ~20% of joints without any image evidence
    visible[:, 0] = True
    background = rng.uniform(-20, 20, (17, hm_size[1], hm_size[0])).astype(np.float32)
    person_tags = np.array([1.0, 3.0, 5.0, 7.0])
    heat, tags = render_maps(
        image_to_heatmap(gt, transform, hm_size), visible, hm_size, person_tags, background_tags=background
    )
    heat += rng.normal(0, 0.03, heat.shape).astype(np.float32)
    tags += rng.normal(0, 0.1, tags.shape).astype(np.float32)
    det, scores = decode_to_image(heat, tags, transform, hm_size)

    ap = coco_ap(gt, visible, det, scores)
    logger.info("Synthetic AP with noise (heatmap std 0.03, tag std 0.1) and ~20%% occluded joints: %.4f", ap)
    print(f"noisy/occluded synthetic AP = {ap:.4f}")
    assert ap > 0.8
    cols = match_to_gt(gt, det)
    err = np.linalg.norm(det[cols, :, :2] - gt, axis=-1)[visible]
    assert np.median(err) < 1.0


def test_resize_mapping_round_trip():
    for height, width in ((480, 640), (640, 480), (512, 512), (300, 301)):
        t = compute_resize(height, width)
        assert min(t.input_width, t.input_height) == 512
        assert t.input_width % 64 == 0 and t.input_height % 64 == 0
        pts = np.array([[0.0, 0.0], [width - 1.0, height - 1.0], [width / 3, height / 5]])
        m = t.image_to_input_matrix()
        inp = pts @ m[:, :2].T + m[:, 2]  # image -> network-input pixels
        in_size = np.array([t.input_width, t.input_height])
        hm_size = in_size // 2
        hm = inp * (hm_size - 1) / (in_size - 1)  # UDP: input pixel centres -> heatmap pixel centres
        back = t.heatmap_to_image(hm, *hm_size)
        np.testing.assert_allclose(back, pts, atol=1e-3)
    t = compute_resize(480, 640)
    assert (t.input_width, t.input_height) == (704, 512)
    assert t.scale == pytest.approx(((704 - 1) / (512 - 1) * 479, 479))
    non_udp = compute_resize(480, 640, use_udp=False)
    pts = np.array([[10.0, 20.0]])
    back = non_udp.heatmap_to_image(
        (pts @ non_udp.image_to_input_matrix()[:, :2].T + non_udp.image_to_input_matrix()[:, 2]) / 2, 352, 256
    )
    np.testing.assert_allclose(back, pts, atol=1e-4)


def test_resize_for_network_pads_bottom_right():
    image = np.full((480, 640, 3), 200, np.uint8)
    t = compute_resize(480, 640)
    out = resize_for_network(image, t)
    assert out.shape == (512, 704, 3)
    assert out[:10, :10].min() == 200 and out[-1, -1].max() == 0


def test_flip_aggregation_of_consistent_outputs_equals_plain_outputs():
    torch.manual_seed(0)
    quarter, half = torch.rand(1, 34, 8, 12), torch.rand(1, 17, 16, 24)
    flipped = (flip_back(quarter[:, :17]), flip_back(quarter[:, 17:])), flip_back(half)
    flipped_quarter = torch.cat(flipped[0], dim=1)
    heat, tags = aggregate_outputs((quarter, half), (flipped_quarter, flipped[1]))
    torch.testing.assert_close(heat, aggregate_stages(quarter, half))
    assert tags.shape == (1, 17, 16, 24, 2)
    torch.testing.assert_close(tags[..., 0], tags[..., 1])
    assert list(COCO_FLIP_INDEX) == [int(i) for i in flip_back(torch.arange(17.0).view(1, 17, 1, 1)).flatten()]
    heat1, tags1 = aggregate_outputs((quarter, half), None)
    assert tags1.shape == (1, 17, 16, 24, 1)


def test_top_k_and_grouping_order():
    heat = torch.zeros(17, 20, 20)
    tags = torch.zeros(17, 20, 20, 1)
    for j in range(17):
        heat[j, 5, 3], tags[j, 5, 3] = 0.9, 0.0  # person A
        heat[j, 15, 12], tags[j, 15, 12] = 0.6, 4.0  # person B
        heat[j, 5, 4] = 0.8  # suppressed by NMS (neighbour of a higher peak)
    cand = top_k_candidates(heat, tags, k=3)
    assert cand.locs.shape == (17, 3, 2)
    np.testing.assert_array_equal(cand.locs[0, :2], [[3, 5], [12, 15]])
    assert cand.vals[0, 2] == 0
    poses = group_by_tags(cand)
    assert poses.shape == (2, 17, 4)
    np.testing.assert_allclose(poses[0, :, :3], np.tile([3, 5, 0.9], (17, 1)), rtol=1e-6)
    np.testing.assert_allclose(poses[1, :, 3], 4.0)


def test_tag_threshold_starts_new_person():
    heat = torch.zeros(17, 20, 20)
    tags = torch.zeros(17, 20, 20, 1)
    heat[0, 2, 2], tags[0, 2, 2] = 0.9, 0.0
    heat[1, 2, 4], tags[1, 2, 4] = 0.9, 0.4  # joins (distance 0.4 < 1)
    heat[2, 2, 6], tags[2, 2, 6] = 0.9, 1.6  # distance to mean 0.2 is 1.4 >= 1: new person
    poses = group_by_tags(top_k_candidates(heat, tags, k=2))
    assert poses.shape[0] == 2
    assert (poses[0, :3, 2] > 0).tolist() == [True, True, False]
    assert (poses[1, :3, 2] > 0).tolist() == [False, False, True]


def test_dark_udp_recovers_subpixel_peak():
    ys, xs = np.mgrid[0:32, 0:32]
    heat = np.exp(-((xs - 10.3) ** 2 + (ys - 20.6) ** 2) / (2 * 2.0**2)).astype(np.float32)[None]
    before = heat.copy()
    coords = adjust_dark_udp(np.array([[[10.0, 21.0]]], np.float32), heat)
    np.testing.assert_allclose(coords[0, 0], [10.3, 20.6], atol=0.05)
    np.testing.assert_array_equal(heat, before)  # the caller's heatmaps are not modified


def test_quarter_offset_adjust_and_refine():
    heat = np.zeros((17, 16, 16), np.float32)
    heat[:, 8, 8], heat[:, 8, 9], heat[:, 9, 8] = 1.0, 0.5, 0.5
    poses = np.zeros((1, 17, 4), np.float32)
    poses[0, 0] = (8, 8, 1.0, 2.0)
    adjusted = adjust_quarter_offset(poses, heat)
    np.testing.assert_allclose(adjusted[0, 0, :2], [8.75, 8.75])
    assert adjusted[0, 1, 2] == 0
    tags = np.full((17, 16, 16, 1), 2.0, np.float32)
    refined = refine_missing_joints(poses[0], heat, tags, use_udp=True)
    np.testing.assert_allclose(refined[1, :3], [8.25, 8.25, 1.0])
    np.testing.assert_allclose(refined[0], poses[0, 0])


def test_decode_validates_shapes_and_config():
    with pytest.raises(ValueError, match=r"heatmaps \(K, H, W\) and tags \(K, H, W, L\)"):
        decode_poses(torch.zeros(17, 8, 8), torch.zeros(17, 8, 9, 1))
    with pytest.raises(ValueError, match="nms_padding"):
        BottomUpConfig(nms_kernel=5, nms_padding=3)
    with pytest.raises(ValueError, match="size_divisor"):
        BottomUpConfig(size_divisor=48)
    empty = decode_poses(torch.zeros(17, 8, 8), torch.zeros(17, 8, 8, 1))
    assert empty.poses.shape == (0, 17, 4) and empty.scores.shape == (0,)
