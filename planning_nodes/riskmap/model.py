"""The risk-map transformer (RiskMM's middle layer, made concrete) and the map it renders.

Tokens (``features.py``): opponents (state, short history, along-track prior), the ego, BEV patches
of the segmentation and track samples ahead. Each pre-norm layer lets the cars (ego included)
attend to each other (interactions), then to the context tokens (the track ahead, what perception
sees); context tokens do not attend among themselves, which keeps the network small and fast.
Each opponent's output predicts K modes of its future: per horizon step a correction to the prior
position, a Gaussian uncertainty along/across its heading, a heading correction, and the mode weight.

The map is rendered from these predictions, so every cell keeps a stated meaning: for opponent j,
P_j(c, t) = Σ_k w_jk · P(cell centre c inside j's footprint | centre ~ N(μ_jkt, Σ_jkt)), exact for a
box under an axis-aligned Gaussian (a product of two normal-CDF differences); the value published is
``1 − Π_j (1 − P_j(c, t) · severity_j)`` (= P · severity for one opponent). Rendering is torch at
sampled cells (training) or numpy in per-opponent windows (the node).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from planning_nodes.riskmap.features import (
    AGENT_FEATURES,
    BEV_FEATURES,
    EGO_FEATURES,
    POSITION_SCALE,
    TRACK_FEATURES,
)
from planning_nodes.riskmap.geometry import RISK_GRID, RISK_TIMES
from racestack.errors import ModelFileError
from racestack.grid import BevGrid
from racestack.inference import NetworkSpec

MIN_SIGMA, MAX_SIGMA = 0.15, 8.0
WINDOW = 48  # cells per side of the window an opponent's footprint is rendered in (node)


class Attention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameters, written out so it exports to ONNX
    (the fused kernel PyTorch uses in eval mode has no ONNX symbolic)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, key: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        b, n, width = query.shape
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        head = width // self.heads
        q = nn.functional.linear(query, w_q, b_q).reshape(b, n, self.heads, head).transpose(1, 2)
        k = nn.functional.linear(key, w_k, b_k).reshape(b, -1, self.heads, head).transpose(1, 2)
        v = nn.functional.linear(key, w_v, b_v).reshape(b, -1, self.heads, head).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head)
        if padding is not None:
            scores = scores.masked_fill(padding[:, None, None, :], -1e9)
        out = torch.softmax(scores, dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, width))


class InteractionLayer(nn.Module):
    """Agents (ego included) attend to each other, then to the context tokens; pre-norm residuals."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ff = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attention = Attention(width, heads)
        self.cross_attention = Attention(width, heads)
        self.feed_forward = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, agents: torch.Tensor, padding: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm_self(agents)
        agents = agents + self.self_attention(x, x, padding)
        x = self.norm_cross(agents)
        agents = agents + self.cross_attention(x, context)
        return agents + self.feed_forward(self.norm_ff(agents))


class RiskMapNet(nn.Module):
    """Attention over interactions (agents ⇄ agents, agents → BEV and track) -> multimodal futures."""

    def __init__(self, width: int = 64, heads: int = 4, layers: int = 3, modes: int = 3) -> None:
        super().__init__()
        self.config = {"width": width, "heads": heads, "layers": layers, "modes": modes}
        self.modes, self.steps = modes, len(RISK_TIMES)
        self.embed = nn.ModuleDict(
            {
                "agent": _mlp(AGENT_FEATURES, width),
                "ego": _mlp(EGO_FEATURES, width),
                "bev": _mlp(BEV_FEATURES, width),
                "track": _mlp(TRACK_FEATURES, width),
            }
        )
        self.kind = nn.Parameter(torch.zeros(4, width))
        self.layers = nn.ModuleList([InteractionLayer(width, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, modes * (self.steps * 5 + 1))
        )

    def forward(
        self,
        agents: torch.Tensor,
        agent_mask: torch.Tensor,
        ego: torch.Tensor,
        bev: torch.Tensor,
        track: torch.Tensor,
        prior: torch.Tensor,
        prior_yaw: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """agents (B, M, F), agent_mask (B, M) 1 = real, ego (B, 3), bev (B, P, 6), track (B, K, 7),
        prior (B, M, T, 2) metres, prior_yaw (B, M, T) -> mean (B, M, K, T, 2) m, sigma (B, M, K, T, 2) m
        (along, across), yaw (B, M, K, T), weight (B, M, K)."""
        b, m = agents.shape[:2]
        actors = torch.cat(
            [(self.embed["ego"](ego) + self.kind[1]).unsqueeze(1), self.embed["agent"](agents) + self.kind[0]], dim=1
        )
        context = torch.cat([self.embed["bev"](bev) + self.kind[2], self.embed["track"](track) + self.kind[3]], dim=1)
        ego_real = torch.ones(b, 1, dtype=agent_mask.dtype, device=agent_mask.device)
        padding = torch.cat([ego_real, agent_mask], dim=1) < 0.5
        for layer in self.layers:
            actors = layer(actors, padding, context)
        out = self.head(self.norm(actors[:, 1:])).reshape(b, m, self.modes, self.steps * 5 + 1)
        steps = out[..., :-1].reshape(b, m, self.modes, self.steps, 5)
        mean = prior.unsqueeze(2) + steps[..., 0:2] * (POSITION_SCALE / 10.0)
        sigma = MIN_SIGMA + (MAX_SIGMA - MIN_SIGMA) * torch.sigmoid(steps[..., 2:4] - 2.0)
        yaw = prior_yaw.unsqueeze(2) + 0.3 * torch.tanh(steps[..., 4])
        weight = torch.softmax(out[..., -1], dim=-1)
        return mean, sigma, yaw, weight


def _mlp(inputs: int, width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, width))


# -- rendering -------------------------------------------------------------------------------------


def footprint_probability_torch(cell_x, cell_y, mean, sigma, yaw, length, width):
    """P(cell centres inside a box whose centre ~ N(mean, diag(sigma²)) in its own axes); broadcasts.

    cell_x/cell_y (...), mean/sigma (..., 2), yaw/length/width (...). Cell coordinates come apart and
    the scale of each erf argument goes onto the small factors, so that a window's rows and columns
    meet in as few full-size operations as possible (the node renders ~300k cells per map).
    """
    rel_x, rel_y = cell_x - mean[..., 0], cell_y - mean[..., 1]
    c, s = torch.cos(yaw), torch.sin(yaw)
    k_along, k_across = 1.0 / (math.sqrt(2.0) * sigma[..., 0]), 1.0 / (math.sqrt(2.0) * sigma[..., 1])
    along = (c * k_along) * rel_x + (s * k_along) * rel_y
    across = (c * k_across) * rel_y - (s * k_across) * rel_x
    half_along, half_across = (length / 2.0) * k_along, (width / 2.0) * k_across
    return 0.25 * _erf_span(along, half_along) * _erf_span(across, half_across)


def _erf_span(x, half):
    return torch.erf(x + half) - torch.erf(x - half)


def render_window(
    mean: np.ndarray,
    sigma: np.ndarray,
    yaw: np.ndarray,
    weight: np.ndarray,
    length: np.ndarray,
    width: np.ndarray,
    severity: np.ndarray,
    grid: BevGrid = RISK_GRID,
) -> np.ndarray:
    """The (T, H, W) risk map of M opponents with K modes, each rendered in a window around it.

    mean (M, K, T, 2) and sigma (M, K, T, 2) in the grid frame (m), yaw (M, K, T), weight (M, K),
    length/width/severity (M,). float32 torch on the calling thread: its erf is 8x faster than
    scipy's, and the rendering was two thirds of the node's cycle.
    """
    m, _, t = yaw.shape
    if m == 0:
        return np.zeros((t, grid.height, grid.width), np.float32)
    with torch.no_grad():
        mean_t, sigma_t, yaw_t, weight_t, length_t, width_t, severity_t = (
            torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            for a in (mean, sigma, yaw, weight, length, width, severity)
        )
        center = torch.einsum("mk,mktd->mtd", weight_t, mean_t)
        offsets = torch.arange(WINDOW) - WINDOW // 2
        ix = torch.floor((center[..., 0] - grid.x_min) / grid.resolution).long()[..., None] + offsets  # (M, T, W)
        iy = torch.floor((center[..., 1] - grid.y_min) / grid.resolution).long()[..., None] + offsets
        cx = grid.x_min + (ix + 0.5) * grid.resolution
        cy = grid.y_min + (iy + 0.5) * grid.resolution
        p = footprint_probability_torch(
            cx[:, None, :, None, :],  # (M, 1, T, 1, W)
            cy[:, None, :, :, None],  # (M, 1, T, W, 1)
            mean_t[..., None, None, :],  # (M, K, T, 1, 1, 2)
            sigma_t[..., None, None, :],
            yaw_t[..., None, None],
            length_t[:, None, None, None, None],
            width_t[:, None, None, None, None],
        )
        p = torch.einsum("mk,mktyx->mtyx", weight_t, p)
        risk = (p * severity_t[:, None, None, None]).clamp(0.0, 1.0 - 1e-6)
        # cells outside the grid go to one extra cell past the end: a mask would cost a gather
        size = t * grid.height * grid.width
        valid = ((iy >= 0) & (iy < grid.height))[..., :, None] & ((ix >= 0) & (ix < grid.width))[..., None, :]
        cell = (torch.arange(t)[None, :, None, None] * grid.height + iy[..., :, None]) * grid.width + ix[..., None, :]
        cell = torch.where(valid, cell, size)
        log_free = torch.zeros(size + 1)
        log_free.index_add_(0, cell.reshape(-1), torch.log1p(-risk).reshape(-1))
        return (1.0 - torch.exp(log_free[:size])).reshape(t, grid.height, grid.width).numpy()


# -- checkpoints -----------------------------------------------------------------------------------


def save_checkpoint(model: RiskMapNet, path: Path, extra: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.config, "state_dict": model.state_dict(), **extra}, path)


def load_model(path: str | Path) -> RiskMapNet:
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        model = RiskMapNet(**data["config"])
        model.load_state_dict(data["state_dict"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(str(path), f"not a risk-map checkpoint: {exc}") from exc
    return model.eval()


MAX_AGENTS = 8


def example_inputs(model: RiskMapNet | None = None) -> tuple[torch.Tensor, ...]:
    """One batch of the node's shapes (M = MAX_AGENTS, 64 BEV patches, 32 track tokens)."""
    from planning_nodes.riskmap.features import TRACK_TOKENS

    b, m, t = 1, MAX_AGENTS, len(RISK_TIMES)
    return (
        torch.zeros(b, m, AGENT_FEATURES),
        torch.ones(b, m),
        torch.zeros(b, EGO_FEATURES),
        torch.zeros(b, 64, BEV_FEATURES),
        torch.zeros(b, TRACK_TOKENS, TRACK_FEATURES),
        torch.zeros(b, m, t, 2),
        torch.zeros(b, m, t),
    )


RISKMAP_SPEC = NetworkSpec(
    name="riskmap",
    input_names=("agents", "agent_mask", "ego", "bev", "track", "prior", "prior_yaw"),
    output_names=("mean", "sigma", "yaw", "weight"),
    load_torch=load_model,
    example_inputs=example_inputs,
    tolerance=1e-3,
)
