"""Training losses: class-weighted CE or focal (+ soft Dice) for segmentation, MSSCE for reconstruction.

The paper's MSSCE mixes MSE and SmoothL1 on the maps and on their edges. The reference computed the
edges with OpenCV Canny on detached uint8 copies, so the edge terms had no gradient; here the edges
are a Sobel gradient magnitude, a convolution, so they train the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def class_weights(counts: torch.Tensor) -> torch.Tensor:
    """Inverse square-root frequency weights, mean 1 (classes never seen get the largest weight)."""
    frequency = counts.double().clamp(min=1.0) / counts.double().clamp(min=1.0).sum()
    weights = frequency.rsqrt()
    return (weights / weights.mean()).float()


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    kind: str = "ce",
    gamma: float = 2.0,
    dice_weight: float = 0.0,
) -> torch.Tensor:
    """Per-cell loss over (B, K, H, W) logits and (B, H, W) class ids; ``kind`` is ce or focal."""
    if kind not in ("ce", "focal"):
        raise ValueError(f"segmentation loss '{kind}' is not ce or focal")
    log_probs = F.log_softmax(logits, dim=1)
    picked = log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    loss = -picked
    if kind == "focal":
        loss = loss * (1.0 - picked.exp()).pow(gamma)
    if weights is not None:
        cell_weights = weights.to(logits.device)[labels]
        loss = (loss * cell_weights).sum() / cell_weights.sum()
    else:
        loss = loss.mean()
    if dice_weight > 0:
        loss = loss + dice_weight * soft_dice(log_probs.exp(), labels)
    return loss


def soft_dice(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch: pushes IoU of thin, rare classes."""
    one_hot = F.one_hot(labels, probabilities.shape[1]).permute(0, 3, 1, 2).to(probabilities.dtype)
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    present = one_hot.sum(dims) > 0
    dice = (2.0 * intersection + 1.0) / (total + 1.0)
    return 1.0 - dice[present].mean()


def sobel_edges(maps: torch.Tensor) -> torch.Tensor:
    """Differentiable edge magnitude of each channel of (B, C, H, W) maps."""
    channels = maps.shape[1]
    kernel_x = _SOBEL_X.to(maps.device, maps.dtype).expand(channels, 1, 3, 3)
    kernel_y = kernel_x.transpose(2, 3)
    padded = F.pad(maps, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, kernel_x, groups=channels)
    gy = F.conv2d(padded, kernel_y, groups=channels)
    return torch.sqrt(gx * gx + gy * gy + 1e-8)


def mssce(prediction: torch.Tensor, target: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """The paper's combined loss: alpha * (MSE + SmoothL1) on maps + (1 - alpha) * the same on edges."""
    edges_p, edges_t = sobel_edges(prediction), sobel_edges(target)
    maps = F.mse_loss(prediction, target) + F.smooth_l1_loss(prediction, target)
    edges = F.mse_loss(edges_p, edges_t) + F.smooth_l1_loss(edges_p, edges_t)
    return alpha * maps + (1.0 - alpha) * edges


def reconstruction_loss(
    raw: torch.Tensor,
    occupancy: torch.Tensor,
    height: torch.Tensor,
    alpha: float = 0.85,
    bce_weight: float = 1.0,
    pos_weight: float = 4.0,
    motion_weight: float = 0.0,
) -> torch.Tensor:
    """Loss of the raw reconstruction output (B, 2+F, H, W) against occupancy (B, 1+F, H, W) and height.

    Channel 1 of ``raw`` is the height; the others are occupancy logits (now, then each horizon).
    ``motion_weight`` > 0 adds ``motion_loss`` on the horizons.
    """
    logits = torch.cat((raw[:, :1], raw[:, 2:]), dim=1)
    loss = mssce(torch.sigmoid(logits), occupancy, alpha) + mssce(raw[:, 1:2], height.unsqueeze(1), alpha)
    if bce_weight > 0:
        weight = torch.tensor(pos_weight, device=raw.device)
        loss = loss + bce_weight * F.binary_cross_entropy_with_logits(logits, occupancy, pos_weight=weight)
    if motion_weight > 0:
        loss = loss + motion_loss(raw[:, 2:], occupancy, motion_weight)
    return loss


def motion_loss(future_logits: torch.Tensor, occupancy: torch.Tensor, weight: float) -> torch.Tensor:
    """BCE on the horizons with the cells whose occupancy changes from now weighted ``1 + weight``.

    The moving cars are a few hundred of 65k cells, the rest of the future is the static scene; with
    every cell weighted alike the horizons learn to repeat the present (IoU off the barriers ~0).
    """
    future, now = occupancy[:, 1:], occupancy[:, :1]
    cell_weight = 1.0 + weight * (future != now).to(future.dtype)
    return F.binary_cross_entropy_with_logits(future_logits, future, weight=cell_weight)
