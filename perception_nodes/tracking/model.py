"""3DMOTFormer in PyTorch: an edge-augmented graph transformer over the track–detection graph.

Tracks carry the latent feature of the detection they last matched. One encoder layer of masked
self-attention refines the tracks; each decoder layer runs masked self-attention over detections,
then edge-augmented cross-attention from detections to tracks (edge features add a per-head bias
to the logits and a per-edge term to the values; the logits are projected back into the edges),
then node and edge feed-forward blocks. Heads: an affinity logit per edge; a velocity and a
confidence per detection. All attention is dense and masked, so the graph exports to ONNX with dynamic T and D.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from perception_nodes.tracking.graph import DET_FEATURES, EDGE_FEATURES, TRACK_FEATURES
from racestack.errors import ModelFileError
from racestack.inference import NetworkSpec
from racestack.paths import models_dir

NEG = 1e4
INPUT_NAMES = ("det_feats", "track_feats", "track_latent", "edge_feats", "edge_mask", "det_mask", "track_mask")
OUTPUT_NAMES = ("affinity", "velocity", "det_latent", "confidence")
DEFAULT_CHECKPOINT = "tracker_3dmotformer/tracker_3dmotformer.pt"


@dataclass(frozen=True)
class ModelConfig:
    """Sizes: the paper uses width 128 with 8 heads (``paper``); ``lite`` narrows the node and, above all,
    the edge width (the edges dominate the cost: T x D of them) to run on a CPU."""

    d_model: int = 64
    d_edge: int = 16
    heads: int = 4
    encoder_layers: int = 1
    decoder_layers: int = 3
    ffn_mult: int = 2
    dropout: float = 0.1

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        presets = {"lite": cls(), "paper": cls(d_model=128, d_edge=128, heads=8)}
        if name not in presets:
            raise ValueError(f"unknown model preset '{name}' (have: {', '.join(presets)})")
        return presets[name]


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``mask``; rows with no allowed key give zeros."""
    weights = torch.softmax(logits + (mask - 1.0) * NEG, dim=-1)
    return weights * mask


def feed_forward(width: int, mult: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(width),
        nn.Linear(width, width * mult),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(width * mult, width),
        nn.Dropout(dropout),
    )


class SelfAttention(nn.Module):
    """Pre-norm masked multi-head self-attention with a residual connection."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.d_model // cfg.heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        weights = masked_softmax(q @ k.transpose(-1, -2) * self.scale, mask[:, None])
        mixed = (weights @ v).permute(0, 2, 1, 3).reshape(b, n, d)
        return x + self.drop(self.out(mixed))


class EdgeCrossAttention(nn.Module):
    """Detections attend to tracks along gated edges; edges bias the logits and receive them back."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.d_model // cfg.heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.norm_det = nn.LayerNorm(cfg.d_model)
        self.norm_track = nn.LayerNorm(cfg.d_model)
        self.norm_edge = nn.LayerNorm(cfg.d_edge)
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.edge_bias = nn.Linear(cfg.d_edge, cfg.heads)
        self.edge_value = nn.Linear(cfg.heads * cfg.d_edge, cfg.d_model)
        self.logits_to_edge = nn.Linear(cfg.heads, cfg.d_edge)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, det: torch.Tensor, track: torch.Tensor, edge: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, nd, d = det.shape
        nt = track.shape[1]
        h, dh = self.heads, self.head_dim
        e = self.norm_edge(edge)
        q = self.q(self.norm_det(det)).reshape(b, nd, h, dh).transpose(1, 2)
        k, v = self.kv(self.norm_track(track)).reshape(b, nt, 2, h, dh).permute(2, 0, 3, 1, 4).unbind(0)
        logits = q @ k.transpose(-1, -2) * self.scale + self.edge_bias(e).permute(0, 3, 1, 2)
        weights = masked_softmax(logits, mask[:, None])
        # Per-head linear maps of the edges, applied after the weighted sum (same result, far cheaper).
        edge_mix = (weights.transpose(1, 2) @ e).reshape(b, nd, h * e.shape[-1])
        mixed = (weights @ v).transpose(1, 2).reshape(b, nd, d) + self.edge_value(edge_mix)
        det = det + self.drop(self.out(mixed))
        edge = edge + self.logits_to_edge(logits.permute(0, 2, 3, 1))
        return det, edge


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attention = SelfAttention(cfg)
        self.cross_attention = EdgeCrossAttention(cfg)
        self.det_ffn = feed_forward(cfg.d_model, cfg.ffn_mult, cfg.dropout)
        self.edge_ffn = feed_forward(cfg.d_edge, cfg.ffn_mult, cfg.dropout)

    def forward(self, det, track, edge, det_mask, edge_mask):
        det = self.self_attention(det, det_mask)
        det, edge = self.cross_attention(det, track, edge, edge_mask)
        return det + self.det_ffn(det), edge + self.edge_ffn(edge)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.ffn = feed_forward(cfg.d_model, cfg.ffn_mult, cfg.dropout)

    def forward(self, track: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        track = self.attention(track, mask)
        return track + self.ffn(track)


def head(width: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, outputs))


class MOTFormer(nn.Module):
    """(det_feats, track_feats, track_latent, edge_feats, masks) -> (affinity, velocity, det latent, confidence).

    Shapes: det_feats (B, D, 20), track_feats (B, T, 23), track_latent (B, T, d_model),
    edge_feats (B, D, T, 14), edge_mask (B, D, T), det_mask (B, D, D), track_mask (B, T, T);
    affinity (B, D, T), velocity (B, D, 2) relative to the ego in its axes / VELOCITY_SCALE,
    det_latent (B, D, d_model): what a track matched (or born) from each detection carries on;
    confidence (B, D): logit that the detection is a real object, given its tracks (an addition to
    the paper, which scores tracks with the detector's score; see docs/tracking.md).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.heads:
            raise ValueError(f"d_model {cfg.d_model} is not divisible by heads {cfg.heads}")
        self.cfg = cfg
        self.det_embed = nn.Linear(DET_FEATURES, cfg.d_model)
        self.track_embed = nn.Linear(TRACK_FEATURES, cfg.d_model)
        self.edge_embed = nn.Linear(EDGE_FEATURES, cfg.d_edge)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.det_norm = nn.LayerNorm(cfg.d_model)
        self.affinity_head = head(cfg.d_edge, 1)
        self.velocity_head = head(cfg.d_model, 2)
        self.confidence_head = head(cfg.d_model, 1)

    def forward(self, det_feats, track_feats, track_latent, edge_feats, edge_mask, det_mask, track_mask):
        track = track_latent + self.track_embed(track_feats)
        for layer in self.encoder:
            track = layer(track, track_mask)
        det = self.det_embed(det_feats)
        edge = self.edge_embed(edge_feats)
        for layer in self.decoder:
            det, edge = layer(det, track, edge, det_mask, edge_mask)
        affinity = self.affinity_head(edge).squeeze(-1)
        return affinity, self.velocity_head(det), self.det_norm(det), self.confidence_head(det).squeeze(-1)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model: MOTFormer, path: Path, meta: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": asdict(model.cfg), "state_dict": state, "meta": meta or {}}, path)


def load_checkpoint(path: str | Path) -> MOTFormer:
    """The model of a checkpoint in eval mode; ModelFileError naming the path when unusable."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = MOTFormer(ModelConfig(**blob["config"]))
        model.load_state_dict(blob["state_dict"])
    except FileNotFoundError as exc:
        raise ModelFileError(str(path), "checkpoint does not exist") from exc
    except Exception as exc:
        raise ModelFileError(str(path), f"not a 3DMOTFormer checkpoint: {exc}") from exc
    return model.eval()


def default_checkpoint() -> Path:
    return models_dir() / DEFAULT_CHECKPOINT


def example_inputs(model: MOTFormer, tracks: int = 4, dets: int = 5, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random graph inputs of the right shapes (export, parity checks, benchmarks)."""
    rng = np.random.default_rng(seed)
    d = model.cfg.d_model

    def rand(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))

    def mask(*shape: int) -> torch.Tensor:
        values = (rng.random(shape) < 0.5).astype(np.float32)
        if shape[-1] == shape[-2]:
            values = np.maximum(values, np.eye(shape[-1], dtype=np.float32))
        return torch.from_numpy(values)

    return (
        rand(1, dets, DET_FEATURES),
        rand(1, tracks, TRACK_FEATURES),
        rand(1, tracks, d),
        rand(1, dets, tracks, EDGE_FEATURES),
        mask(1, dets, tracks),
        mask(1, dets, dets),
        mask(1, tracks, tracks),
    )


NETWORK_SPEC = NetworkSpec(
    name="tracker_3dmotformer",
    input_names=INPUT_NAMES,
    output_names=OUTPUT_NAMES,
    load_torch=load_checkpoint,
    example_inputs=example_inputs,
    dynamic_axes={
        "det_feats": {1: "D"},
        "track_feats": {1: "T"},
        "track_latent": {1: "T"},
        "edge_feats": {1: "D", 2: "T"},
        "edge_mask": {1: "D", 2: "T"},
        "det_mask": {1: "D", 2: "D"},
        "track_mask": {1: "T", 2: "T"},
        "affinity": {1: "D", 2: "T"},
        "velocity": {1: "D"},
        "confidence": {1: "D"},
        "det_latent": {1: "D"},
    },
)
