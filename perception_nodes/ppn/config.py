"""PPN configurations: the BEV input, the two networks and training, as plain data.

A checkpoint stores the dictionary of the configuration it was trained with, so a node rebuilds
exactly the BEV encoder its network expects. ``lite`` is sized for real time on one CPU core,
``paper`` follows the published setup (1000 x 1000 at 0.2 m, 16 sweeps, full-width nets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from racestack.grid import BevGrid
from racestack.objects import BEV_CLASSES

FEATURES = ("height", "intensity", "density")


@dataclass(frozen=True)
class BevConfig:
    """How a sweep becomes a BEV tensor.

    Channels: one obstacle-occupancy channel per sweep (current first, then older sweeps,
    motion-compensated into the current base_link), then the optional ``features`` of the current
    sweep in the order of ``FEATURES``.
    """

    cells: int = 256
    resolution: float = 0.4
    sweeps: int = 4
    z_min: float = -1.0
    z_max: float = 4.0
    obstacle_z: float = 0.3
    features: tuple[str, ...] = FEATURES
    height_scale: float = 2.0
    intensity_scale: float = 1.0
    history_factor: int = 2

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ValueError(f"bev.features: unknown feature '{unknown[0]}' (known: {', '.join(FEATURES)})")
        if self.sweeps < 1 or self.cells < 8 or self.resolution <= 0 or self.history_factor < 1:
            raise ValueError("bev: sweeps >= 1, cells >= 8, resolution > 0 and history_factor >= 1 required")
        if not self.z_min < self.obstacle_z < self.z_max:
            raise ValueError("bev: z_min < obstacle_z < z_max required")

    @property
    def grid(self) -> BevGrid:
        return BevGrid.centered(self.cells, self.resolution)

    @property
    def channels(self) -> int:
        return self.sweeps + len(self.features)

    def channel_names(self) -> list[str]:
        ordered = [f for f in FEATURES if f in self.features]
        return [f"occupancy_t-{k}" for k in range(self.sweeps)] + ordered


@dataclass(frozen=True)
class NetConfig:
    """Width and depth of the pyramid encoder-decoder (six stages in the paper)."""

    widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    convs: tuple[int, ...] = (1, 2, 2, 2, 2, 2)
    skips: bool = True

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.convs) or len(self.widths) < 2:
            raise ValueError("net: widths and convs need the same length (>= 2)")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch: int = 8
    crop: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seg_loss: str = "ce"
    focal_gamma: float = 2.0
    dice_weight: float = 0.5
    mssce_alpha: float = 0.85
    bce_weight: float = 1.0
    occupancy_pos_weight: float = 4.0
    motion_weight: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class PpnConfig:
    name: str = "lite"
    bev: BevConfig = field(default_factory=BevConfig)
    segmentation: NetConfig = field(default_factory=NetConfig)
    reconstruction: NetConfig = field(default_factory=NetConfig)
    classes: tuple[str, ...] = BEV_CLASSES
    horizons: tuple[float, ...] = (0.5, 1.0)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def reconstruction_channels(self) -> int:
        """Occupancy now, height, then one future occupancy per horizon."""
        return 2 + len(self.horizons)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PpnConfig:
        return cls(
            name=str(data.get("name", "custom")),
            bev=BevConfig(**_tuples(data.get("bev", {}))),
            segmentation=NetConfig(**_tuples(data.get("segmentation", {}))),
            reconstruction=NetConfig(**_tuples(data.get("reconstruction", {}))),
            classes=tuple(data.get("classes", BEV_CLASSES)),
            horizons=tuple(data.get("horizons", (0.5, 1.0))),
            train=TrainConfig(**data.get("train", {})),
        )


def _tuples(section: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}


LITE = PpnConfig()
PAPER = PpnConfig(
    name="paper",
    bev=BevConfig(cells=1000, resolution=0.2, sweeps=16, z_min=-2.0, z_max=5.0),
    segmentation=NetConfig(widths=(32, 64, 128, 256, 512, 1024), convs=(2, 2, 2, 2, 2, 2)),
    reconstruction=NetConfig(widths=(32, 64, 128, 256, 512, 1024), convs=(2, 2, 2, 2, 2, 2)),
    train=replace(TrainConfig(), batch=2, crop=256, lr=1e-3),
)
PRESETS = {"lite": LITE, "paper": PAPER}


def preset(name: str) -> PpnConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown PPN configuration '{name}' (have: {', '.join(PRESETS)})")
    return PRESETS[name]
