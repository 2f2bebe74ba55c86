"""The two PPN networks: a six-stage pyramid encoder-decoder, once for classes, once for the scene.

Unlike the reference, each decoder level upsamples the *previous decoder output* and concatenates
the matching encoder stage, so every stage reaches the output; heads end in plain 1x1 convs
(class logits, occupancy logits, height), not in BN + LeakyReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from perception_nodes.ppn.config import NetConfig, PpnConfig

NEGATIVE_SLOPE = 0.01


def conv_block(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
    )


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
    )


class PyramidNet(nn.Module):
    """Encoder stages (convs, then 2x2 max-pool) and a decoder that climbs back level by level.

    Inputs whose sides are not multiples of 2 ** (stages - 1) (the paper's 1000 cells) are zero-padded
    at the far edges and the output cropped back.
    """

    def __init__(self, in_channels: int, out_channels: int, config: NetConfig) -> None:
        super().__init__()
        widths = config.widths
        self.skips = config.skips
        self.stem = conv_block(in_channels, widths[0], kernel=1)
        self.encoder = nn.ModuleList()
        previous = widths[0]
        for width, convs in zip(widths, config.convs, strict=True):
            self.encoder.append(
                nn.Sequential(*(conv_block(previous if i == 0 else width, width) for i in range(convs)))
            )
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(up_block(widths[i + 1], widths[i]) for i in range(len(widths) - 1))
        self.decoder = nn.ModuleList(
            conv_block(2 * widths[i] if self.skips else widths[i], widths[i]) for i in range(len(widths) - 1)
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.encoder) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = int(x.shape[-2]), int(x.shape[-1])  # static: the ONNX export has a fixed size
        pad_h, pad_w = -height % self.divisor, -width % self.divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.stem(x)
        features = []
        for level, stage in enumerate(self.encoder):
            x = stage(x)
            if level < len(self.encoder) - 1:
                features.append(x)
                x = self.pool(x)
        for level in reversed(range(len(self.decoder))):
            x = self.up[level](x)
            if self.skips:
                x = torch.cat((x, features[level]), dim=1)
            x = self.decoder[level](x)
        x = self.head(x)
        return x[..., :height, :width] if pad_h or pad_w else x


class SegmentationNet(PyramidNet):
    """BEV input -> per-cell class logits (other, track, barrier, vehicle)."""

    def __init__(self, config: PpnConfig) -> None:
        super().__init__(config.bev.channels, len(config.classes), config.segmentation)
        self.ppn_config = config


class ReconstructionNet(PyramidNet):
    """BEV input -> dense occupancy logit, height (m), future occupancy logits per horizon."""

    def __init__(self, config: PpnConfig) -> None:
        super().__init__(config.bev.channels, config.reconstruction_channels, config.reconstruction)
        self.ppn_config = config


class ReconstructionOutput(nn.Module):
    """Deployed form of the reconstruction net: probabilities and metres, (1, H, W, 4) channels last.

    Channels last is the 32FC4 image the node publishes: the runtime folds the transpose into its
    last copy, where numpy spent 0.3 ms of each frame on it (models.EXPORT_TAGS names the layout).
    """

    def __init__(self, net: ReconstructionNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.net(x)
        scene = torch.cat((torch.sigmoid(raw[:, :1]), raw[:, 1:2], torch.sigmoid(raw[:, 2:])), dim=1)
        return scene.permute(0, 2, 3, 1).contiguous()


NETWORKS = {"segmentation": SegmentationNet, "reconstruction": ReconstructionNet}


def build(kind: str, config: PpnConfig) -> PyramidNet:
    if kind not in NETWORKS:
        raise ValueError(f"unknown PPN network '{kind}' (have: {', '.join(NETWORKS)})")
    return NETWORKS[kind](config)
