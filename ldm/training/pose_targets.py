"""Training targets and losses of the bottom-up HigherHRNet: Gaussian heatmaps and associative-embedding tags.

Targets (what :func:`compute_pose_targets` builds from a batch's ``BatchKey.KEYPOINTS``):

1. Every labelled joint (score > 0, inside the image) is mapped to each output resolution with the UDP
   convention ``x_hm = x * (W_hm - 1) / (W_img - 1)`` (pixel centres map to pixel centres, as the decoder's
   inverse ``x_img = x_hm * (W_img - 1) / (W_hm - 1)`` in :mod:`ldm.pose.bottom_up`).
2. Heatmap channel k of an image is the pixel-wise maximum over persons of an unnormalised Gaussian
   ``exp(-d^2 / (2 sigma^2))`` centred on the (sub-pixel) joint position, so the value is exactly 1 on a joint
   that falls on a pixel centre. MMPose uses sigma = 2 heatmap pixels at every output resolution.
3. The tag loss looks the 1/4-resolution tag map up at the nearest pixel of each labelled joint; unlabelled joints
   have weight 0 and take no part in it.

Loss (:func:`bottom_up_loss`), with MMPose 0.x's ``MultiLossFactory`` weighting for HigherHRNet:

* heatmaps: masked squared error averaged over (K, H, W) and the batch, on both outputs (factor 1.0 each);
* associative embedding (Newell et al. 2017, eq. 3), on the 1/4 tags only, per image: with ``h_nk`` the tag of
  joint k of person n and ``m_n`` the mean tag of person n over its labelled joints,
  ``pull = 1/N sum_n mean_k (h_nk - m_n)^2`` and ``push = 1/(N (N - 1)) sum_{n != n'} exp(-(m_n - m_n')^2)``
  times 0.5, then averaged over the batch. The paper's push sums over all ordered pairs including n = n'
  (a constant) and divides by N^2; MMPose's ``AELoss(loss_type="exp")`` drops the diagonal and halves the mean,
  which we follow so that its factors (``push_loss_factor = pull_loss_factor = 0.001``) keep their meaning.

References:
    Newell, Huang, Deng, "Associative Embedding: End-to-End Learning for Joint Detection and Grouping",
    NeurIPS 2017, section 3 (grouping loss).
    Cheng et al., "HigherHRNet: Scale-Aware Representation Learning for Bottom-Up Human Pose Estimation",
    CVPR 2020, section 3 (multi-resolution supervision, sigma 2 at every resolution).
    Huang et al., "The Devil is in the Details: Delving into Unbiased Data Processing for Human Pose
    Estimation", CVPR 2020 (UDP coordinate mapping).
    Behaviour reference (read as a specification, no code copied): open-mmlab/mmpose v0.29.0,
    mmpose/datasets/pipelines/bottom_up_transform.py (``HeatmapGenerator``, ``JointsEncoder``),
    mmpose/models/losses/multi_loss_factory.py (``HeatmapLoss``, ``AELoss``, ``MultiLossFactory``),
    configs/body/2d_kpt_sview_rgb_img/associative_embedding/coco/higherhrnet_w32_coco_512x512_udp.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from ldm.pose.keypoints import NUM_KEYPOINTS

__all__ = [
    "AELossOutput",
    "PoseLossOutput",
    "PoseTargets",
    "ae_loss",
    "bottom_up_loss",
    "compute_pose_targets",
    "heatmap_loss",
    "udp_scale",
]

# MMPose's loss factors for HigherHRNet (higherhrnet_w32_coco_512x512_udp.py, MultiLossFactory).
DEFAULT_PULL_WEIGHT = 1e-3
DEFAULT_PUSH_WEIGHT = 1e-3
DEFAULT_SIGMA = 2.0


class PoseTargets(NamedTuple):
    """Targets of one batch for a HigherHRNet with outputs at 1/4 and 1/2 of the input resolution.

    Attributes:
        heatmaps: per output, lowest resolution first: (B, K, h_s, w_s) float32 in [0, 1].
        masks: per output: (B, 1, h_s, w_s) float32 pixel weights of the heatmap loss (1 = supervised,
            0 = ignored region, e.g. an unlabelled crowd); broadcast over the K channels.
        tag_index: (B, P, K) int64 flat index ``y * w_0 + x`` of each joint's nearest pixel on the first output
            (the tag map); 0 where the joint is not labelled.
        joint_weights: (B, P, K) float32, 1 for labelled joints inside the image, 0 otherwise.
    """

    heatmaps: tuple[torch.Tensor, ...]
    masks: tuple[torch.Tensor, ...]
    tag_index: torch.Tensor
    joint_weights: torch.Tensor


class AELossOutput(NamedTuple):
    """Associative-embedding loss terms, each a scalar averaged over the batch (unweighted)."""

    pull: torch.Tensor
    push: torch.Tensor


class PoseLossOutput(NamedTuple):
    """The weighted total and its unweighted parts.

    Attributes:
        loss: scalar to minimise = sum of heatmap losses + pull_weight * pull + push_weight * push.
        heatmap: per output, the (unweighted) masked MSE of the heatmaps.
        pull: unweighted pull term. push: unweighted push term.
    """

    loss: torch.Tensor
    heatmap: tuple[torch.Tensor, ...]
    pull: torch.Tensor
    push: torch.Tensor


def udp_scale(image_size: int, heatmap_size: int) -> float:
    """Factor taking image pixel coordinates to heatmap coordinates under UDP: ``(W_hm - 1) / (W_img - 1)``.

    Args:
        image_size: image side in pixels (> 1). heatmap_size: heatmap side in pixels (> 1).
    """
    if image_size < 2 or heatmap_size < 2:
        raise ValueError(f"UDP needs image and heatmap sides >= 2; got {image_size} and {heatmap_size}.")
    return (heatmap_size - 1) / (image_size - 1)


def _check_keypoints(keypoints: torch.Tensor) -> None:
    if not isinstance(keypoints, torch.Tensor) or keypoints.ndim != 4 or keypoints.shape[-1] != 3:
        shape = tuple(keypoints.shape) if isinstance(keypoints, torch.Tensor) else type(keypoints).__name__
        raise ValueError(
            f"keypoints must be a (B, P, K, 3) tensor of (x, y, score) in image pixels (BatchKey.KEYPOINTS); "
            f"got {shape}."
        )


def _labelled(keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, P, K) bool: score > 0 and inside [0, W - 1] x [0, H - 1] (pixel-centre coordinates)."""
    x, y, score = keypoints.unbind(-1)
    return (score > 0) & (x >= 0) & (y >= 0) & (x <= width - 1) & (y <= height - 1)


def _gaussian_heatmaps(
    xy: torch.Tensor, owner: torch.Tensor, num_maps: int, size: tuple[int, int], sigma: float
) -> torch.Tensor:
    """Max-composite one Gaussian per joint into ``num_maps`` maps.

    Args:
        xy: (N, 2) heatmap coordinates (x, y). owner: (N,) int64 index of the map each joint is drawn into.
        num_maps: number of maps (B * K). size: (h, w). sigma: standard deviation in heatmap pixels.

    Returns:
        (num_maps, h, w) float32.
    """
    height, width = size
    out = torch.zeros(num_maps, height * width, dtype=torch.float32, device=xy.device)
    if len(xy) == 0:
        return out.view(num_maps, height, width)
    gx = torch.arange(width, dtype=torch.float32, device=xy.device)
    gy = torch.arange(height, dtype=torch.float32, device=xy.device)
    # The 2-D Gaussian is separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2).
    ex = torch.exp(-((gx[None] - xy[:, :1]) ** 2) / (2 * sigma**2))  # (N, w)
    ey = torch.exp(-((gy[None] - xy[:, 1:]) ** 2) / (2 * sigma**2))  # (N, h)
    blobs = (ey[:, :, None] * ex[:, None, :]).reshape(len(xy), -1)  # (N, h*w)
    # Overlapping persons: pixel-wise max (the Gaussians are >= 0, so the zero start is neutral).
    out.scatter_reduce_(0, owner[:, None].expand_as(blobs), blobs, "amax", include_self=True)
    return out.view(num_maps, height, width)


def compute_pose_targets(
    keypoints: torch.Tensor,
    image_size: tuple[int, int],
    heatmap_sizes: Sequence[tuple[int, int]],
    *,
    sigma: float | Sequence[float] = DEFAULT_SIGMA,
    ignore: torch.Tensor | None = None,
) -> PoseTargets:
    """Heatmap, mask and tag-lookup targets for a batch (see the module docstring, steps 1-3).

    Args:
        keypoints: (B, P, K, 3) float (x, y, score) in pixels of the (augmented) image, pixel-centre coordinates;
            missing joints/persons have score 0 (the dataset writes (-1, -1, 0)).
        image_size: (H, W) of the network input images.
        heatmap_sizes: (h, w) of each output, the first one carrying the tag maps (HigherHRNet: 1/4 then 1/2).
        sigma: Gaussian standard deviation in heatmap pixels, one value for all outputs or one per output.
        ignore: optional (B, H, W) bool image region excluded from the heatmap loss (mask 0); a heatmap pixel is
            ignored if the nearest image pixel of its centre is.

    Returns:
        :class:`PoseTargets` on the device of ``keypoints``.

    Raises:
        ValueError: malformed keypoints, sizes or sigma.
    """
    _check_keypoints(keypoints)
    height, width = image_size
    sigmas = (float(sigma),) * len(heatmap_sizes) if isinstance(sigma, (int, float)) else tuple(map(float, sigma))
    if not heatmap_sizes or len(sigmas) != len(heatmap_sizes) or min(sigmas) <= 0:
        raise ValueError(
            f"Need at least one heatmap size and one positive sigma per size; got sizes {list(heatmap_sizes)} and "
            f"sigma {sigma!r}."
        )
    if ignore is not None and tuple(ignore.shape) != (keypoints.shape[0], height, width):
        raise ValueError(
            f"ignore must be (B, H, W) = {(keypoints.shape[0], height, width)}; got {tuple(ignore.shape)}."
        )
    batch, persons, joints, _ = keypoints.shape
    keypoints = keypoints.float()
    labelled = _labelled(keypoints, height, width)  # (B, P, K)
    b_idx, _, k_idx = labelled.nonzero(as_tuple=True)
    owner = b_idx * joints + k_idx  # map index in the flattened (B * K) stack
    heatmaps, masks = [], []
    for (h, w), s in zip(heatmap_sizes, sigmas):
        scale = torch.tensor([udp_scale(width, w), udp_scale(height, h)], device=keypoints.device)
        xy = keypoints[..., :2][labelled] * scale  # (N, 2) heatmap coordinates
        heatmaps.append(_gaussian_heatmaps(xy, owner, batch * joints, (h, w), s).view(batch, joints, h, w))
        masks.append(_heatmap_mask(ignore, batch, (h, w), keypoints.device))
    h0, w0 = heatmap_sizes[0]
    scale0 = torch.tensor([udp_scale(width, w0), udp_scale(height, h0)], device=keypoints.device)
    pix = torch.round(keypoints[..., :2] * scale0).long()  # (B, P, K, 2) nearest pixel on the tag map
    pix[..., 0].clamp_(0, w0 - 1)
    pix[..., 1].clamp_(0, h0 - 1)
    tag_index = torch.where(labelled, pix[..., 1] * w0 + pix[..., 0], torch.zeros_like(pix[..., 0]))
    return PoseTargets(tuple(heatmaps), tuple(masks), tag_index, labelled.float())


def _heatmap_mask(ignore: torch.Tensor | None, batch: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    h, w = size
    if ignore is None:
        return torch.ones(batch, 1, h, w, device=device)
    height, width = ignore.shape[-2:]
    ys = torch.round(torch.arange(h, device=device) / udp_scale(height, h)).long()  # heatmap row -> image row
    xs = torch.round(torch.arange(w, device=device) / udp_scale(width, w)).long()
    return (~ignore.to(device)[:, ys][:, :, xs]).float()[:, None]  # (B, 1, h, w)


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked squared error, averaged over (K, H, W) and the batch (MMPose ``HeatmapLoss``).

    Args:
        pred: (B, K, h, w) predicted heatmaps. target: (B, K, h, w). mask: (B, 1, h, w) pixel weights.

    Returns:
        Scalar loss.
    """
    if pred.shape != target.shape:
        raise ValueError(f"Heatmap prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape.")
    return ((pred - target) ** 2 * mask).mean()


def ae_loss(tags: torch.Tensor, tag_index: torch.Tensor, joint_weights: torch.Tensor) -> AELossOutput:
    """Associative-embedding pull/push loss with 1-D tags (module docstring; Newell et al. 2017, eq. 3).

    Args:
        tags: (B, K, h, w) tag maps (one per joint).
        tag_index: (B, P, K) int64 flat pixel index of each joint in its tag map.
        joint_weights: (B, P, K) 1 for labelled joints, 0 otherwise; persons without labelled joints are ignored.

    Returns:
        :class:`AELossOutput`, each term averaged over the batch (0 for images with fewer than 1 / 2 persons).
    """
    batch, joints = tags.shape[:2]
    if tag_index.shape != joint_weights.shape or tag_index.shape[0] != batch or tag_index.shape[2] != joints:
        raise ValueError(
            f"tag_index {tuple(tag_index.shape)} and joint_weights {tuple(joint_weights.shape)} must both be "
            f"(B, P, K) = ({batch}, P, {joints})."
        )
    flat = tags.flatten(2)  # (B, K, h*w)
    values = torch.gather(flat, 2, tag_index.permute(0, 2, 1)).permute(0, 2, 1)  # (B, P, K) tag at each joint
    weights = joint_weights.to(values.dtype)
    count = weights.sum(-1)  # (B, P) labelled joints per person
    present = (count > 0).to(values.dtype)  # (B, P)
    mean = (values * weights).sum(-1) / count.clamp_min(1)  # (B, P) reference embedding m_n
    spread = ((values - mean[..., None]) ** 2 * weights).sum(-1) / count.clamp_min(1)  # (B, P)
    num_persons = present.sum(-1)  # (B,)
    pull = (spread * present).sum(-1) / num_persons.clamp_min(1)  # (B,)
    diff = mean[:, :, None] - mean[:, None, :]  # (B, P, P)
    pair = present[:, :, None] * present[:, None, :] * (1 - torch.eye(mean.shape[1], device=mean.device))
    pairs = num_persons * (num_persons - 1)  # ordered pairs n != n'
    push = 0.5 * (torch.exp(-(diff**2)) * pair).sum((1, 2)) / pairs.clamp_min(1)  # (B,)
    return AELossOutput(pull.mean(), push.mean())


def bottom_up_loss(
    outputs: Sequence[torch.Tensor],
    targets: PoseTargets,
    *,
    num_joints: int = NUM_KEYPOINTS,
    heatmap_weights: Sequence[float] = (1.0, 1.0),
    pull_weight: float = DEFAULT_PULL_WEIGHT,
    push_weight: float = DEFAULT_PUSH_WEIGHT,
) -> PoseLossOutput:
    """HigherHRNet training loss: heatmap MSE on every output plus the AE loss on the first output's tags.

    Args:
        outputs: network outputs, lowest resolution first: (B, 2K, h0, w0) heatmaps + tags, then (B, K, h_s, w_s).
        targets: from :func:`compute_pose_targets` with the outputs' sizes.
        num_joints: K.
        heatmap_weights: factor of each output's heatmap loss.
        pull_weight: factor of the pull term. push_weight: factor of the push term.

    Returns:
        :class:`PoseLossOutput`.
    """
    if len(outputs) != len(targets.heatmaps) or len(heatmap_weights) != len(outputs):
        raise ValueError(
            f"Got {len(outputs)} outputs, {len(targets.heatmaps)} heatmap targets and {len(heatmap_weights)} "
            "heatmap weights; they must match (HigherHRNet: 2)."
        )
    if outputs[0].shape[1] != 2 * num_joints:
        raise ValueError(
            f"The first output must hold {num_joints} heatmaps + {num_joints} tags; got {outputs[0].shape[1]}."
        )
    terms = tuple(
        heatmap_loss(out[:, :num_joints], target, mask)
        for out, target, mask in zip(outputs, targets.heatmaps, targets.masks)
    )
    tags = outputs[0][:, num_joints : 2 * num_joints]  # (B, K, h0, w0)
    pull, push = ae_loss(tags, targets.tag_index, targets.joint_weights)
    total = sum(w * t for w, t in zip(heatmap_weights, terms)) + pull_weight * pull + push_weight * push
    return PoseLossOutput(total, terms, pull, push)
