"""``racestack dataset tracking``: tracking sequences from simulator runs, and their loader.

Each scenario (``config/scenarios``; ``--heldout`` for ``config/scenarios/heldout``) is run
headless with the expert driving. At every detection frame the ground-truth objects become
detections through ``synthetic_detector`` (in ``base_link``, as the tracker node receives them),
and the ego pose comes from the simulator's odometry (with the scenario's noise), as the node
would see it on /localization/odometry. One ``.npz`` per run:

- ``stamps`` (F,) s; ``ego`` (F, 5): x, y, yaw, vx, vy of base_link in map (odometry);
- ``det`` (N,) OBJECT_DTYPE in base_link, ``det_frame`` (N,), ``det_gt`` (N,) instance id or -1;
- ``gt`` (M,) OBJECT_DTYPE in map (``track_id`` = instance id, true velocities), ``gt_frame`` (M,),
  ``gt_visible`` (M,): in detector range and not hidden (what evaluation scores);
- ``meta``: JSON (scenario, whether it is held out, seed, rate, traffic, noise model).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from perception_nodes.tracking.state import Detections, EgoState
from perception_nodes.tracking.synthetic_detector import DetectorNoise, SyntheticDetector
from racestack.objects import valid_objects

DEFAULT_OUT = Path("datasets/tracking")


@dataclass
class Frame:
    time: float
    ego: EgoState
    detections: np.ndarray  # base_link
    detection_gt: np.ndarray
    gt: np.ndarray  # map, all objects
    gt_visible: np.ndarray

    def map_detections(self) -> tuple[Detections, np.ndarray]:
        """Valid detections moved into map (what the node hands its tracker), and their GT ids."""
        table = self.ego.to_map(self.detections)
        keep = valid_objects(table)
        return Detections.from_table(table[keep]), self.detection_gt[keep]

    @property
    def scored_gt(self) -> np.ndarray:
        """The ground truth evaluation scores: objects the detector could see."""
        return self.gt[self.gt_visible]


@dataclass
class TrackingSequence:
    name: str
    stamps: np.ndarray
    ego: np.ndarray
    det: np.ndarray
    det_frame: np.ndarray
    det_gt: np.ndarray
    gt: np.ndarray
    gt_frame: np.ndarray
    gt_visible: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return int(self.stamps.size)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        det_bounds = np.searchsorted(self.det_frame, np.arange(len(self) + 1))
        gt_bounds = np.searchsorted(self.gt_frame, np.arange(len(self) + 1))
        for k in range(start, len(self) if stop is None else min(stop, len(self))):
            d = slice(det_bounds[k], det_bounds[k + 1])
            g = slice(gt_bounds[k], gt_bounds[k + 1])
            yield Frame(
                time=float(self.stamps[k]),
                ego=EgoState(*map(float, self.ego[k])),
                detections=self.det[d],
                detection_gt=self.det_gt[d],
                gt=self.gt[g],
                gt_visible=self.gt_visible[g],
            )


def save_sequence(path: Path, sequence: TrackingSequence) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in asdict(sequence).items() if isinstance(v, np.ndarray)}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(sequence.meta)), **arrays)
    tmp.replace(path)
    return path


def load_sequence(path: str | Path) -> TrackingSequence:
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
        meta = json.loads(str(data["meta"]))
    return TrackingSequence(name=path.stem, meta=meta, **arrays)


def load_sequences(folder: str | Path) -> list[TrackingSequence]:
    """Every sequence in a folder (sorted by name, so runs are reproducible)."""
    paths = sorted(Path(folder).glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"no tracking sequences (*.npz) in {folder}; run `racestack dataset tracking`")
    return [load_sequence(p) for p in paths]


def add_traffic(scenario, count: int, rng: np.random.Generator):
    """The scenario with ``count`` more scripted cars near the ego's start (lanes, speeds, lane changes,
    braking and overtakes drawn at random), for denser interactions than the shipped traffic."""
    from dataclasses import replace

    from simulation.vehicles import RACING, BrakeEvent, LaneChange, OpponentSpec

    extra = []
    for i in range(count):
        lane = RACING if rng.random() < 0.4 else float(rng.uniform(-3.5, 3.5))
        changes = (LaneChange(float(rng.uniform(5, 60)), float(rng.uniform(-3.5, 3.5)), float(rng.uniform(2, 5))),)
        brakes = (BrakeEvent(float(rng.uniform(5, 60)), float(rng.uniform(15, 35)), float(rng.uniform(6, 12))),)
        extra.append(
            OpponentSpec(
                name=f"traffic_{i}",
                start_s=scenario.ego.start_s + float(rng.uniform(-60.0, 250.0)),
                lane=lane,
                speed=float(rng.uniform(40.0, 80.0)),
                speed_scale=float(rng.uniform(0.75, 0.97)),
                lane_changes=changes if rng.random() < 0.3 else (),
                brakes=brakes if rng.random() < 0.15 else (),
                overtake=bool(rng.random() < 0.3),
            )
        )
    return replace(scenario, opponents=(*scenario.opponents, *extra))


def export_run(
    scenario: str | dict,
    seed: int,
    noise: DetectorNoise,
    rate: float,
    duration: float | None = None,
    traffic: int = 0,
) -> TrackingSequence:
    """Run a scenario with the expert and record detections, odometry and ground truth at ``rate``."""
    from simulation.scenario import load_scenario, scenario_path
    from simulation.simulation import Simulation

    spec = load_scenario(scenario)
    heldout = not isinstance(scenario, dict) and "heldout" in scenario_path(scenario).parent.parts
    spec = add_traffic(spec, traffic, np.random.default_rng([seed, 11])) if traffic else spec
    sim = Simulation.from_scenario(spec, seed=seed)
    every = max(1, round(sim.scenario.rate / rate))
    end = min(duration or sim.scenario.duration, sim.scenario.duration)
    detector = SyntheticDetector(noise, np.random.default_rng([seed, 7]))
    stamps, egos, dets, det_frame, det_gt, gts, gt_frame, gt_visible = ([] for _ in range(8))
    frame = 0
    while sim.frame_time < end - 1e-9:
        sim.step_frame()
        if sim.frame % every:
            continue
        odometry = sim.odometry()
        true_ego = EgoState(sim.ego.x, sim.ego.y, sim.ego.yaw)
        gt = _ground_truth(sim)
        det, ids, visible = detector.detect(gt, true_ego, sim.track)
        stamps.append(sim.frame_time)
        egos.append(_ego_row(odometry))
        dets.append(det)
        det_gt.append(ids)
        det_frame.append(np.full(det.size, frame, np.int32))
        gts.append(gt)
        gt_visible.append(visible)
        gt_frame.append(np.full(gt.size, frame, np.int32))
        frame += 1
    return TrackingSequence(
        name=f"{Path(sim.scenario.name).stem}_s{seed}",
        stamps=np.asarray(stamps),
        ego=np.asarray(egos).reshape(-1, 5),
        det=np.concatenate(dets),
        det_frame=np.concatenate(det_frame),
        det_gt=np.concatenate(det_gt),
        gt=np.concatenate(gts),
        gt_frame=np.concatenate(gt_frame),
        gt_visible=np.concatenate(gt_visible),
        meta={
            "scenario": sim.scenario.source or sim.scenario.name,
            "seed": seed,
            "rate": sim.scenario.rate / every,
            "heldout": heldout,
            "traffic": traffic,
            "noise": asdict(noise),
        },
    )


def _ground_truth(sim) -> np.ndarray:
    """Everything a detector could report: opponents and, when the scenario has them, flying objects."""
    return sim.dynamic_objects()


def _ego_row(odometry) -> list[float]:
    c, s = np.cos(odometry.yaw), np.sin(odometry.yaw)
    return [odometry.x, odometry.y, odometry.yaw, odometry.v * c, odometry.v * s]


def scenario_names(heldout: bool, names: list[str] | None) -> list[str]:
    from simulation.scenario import list_scenarios

    available = list_scenarios(heldout=heldout)
    if not names:
        return available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; available: {', '.join(available)}")
    return names


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (train/ or heldout/ inside)")
    parser.add_argument("--heldout", action="store_true", help="export the held-out scenarios (evaluation only)")
    parser.add_argument("--scenarios", nargs="*", help="scenario names (default: all of the split)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="one run per scenario and seed")
    parser.add_argument("--rate", type=float, default=10.0, help="detection frames per second")
    parser.add_argument("--duration", type=float, help="seconds per run (default: the scenario's)")
    parser.add_argument("--traffic", type=int, default=0, help="extra random cars per run (denser interactions)")


def run(args: argparse.Namespace) -> int:
    split = "heldout" if args.heldout else "train"
    folder = args.out / split
    noise = DetectorNoise()
    for name in scenario_names(args.heldout, args.scenarios):
        for seed in args.seeds:
            start = time.perf_counter()
            sequence = export_run(name, seed, noise, args.rate, args.duration, args.traffic)
            suffix = f"_t{args.traffic}" if args.traffic else ""
            path = save_sequence(folder / f"{sequence.name}{suffix}.npz", sequence)
            wall = time.perf_counter() - start
            print(f"{path}: {len(sequence)} frames, {sequence.det.size} detections ({wall:.1f} s)", flush=True)
    return 0
