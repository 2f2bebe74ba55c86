"""Simulated sensors: per-sensor cost with the default rig, and the frame rate they leave the simulator.

Runs a scenario headless (opponents, default flying objects, default LiDAR 128 x 1024 = 131k rays
and 640x480 camera) and times each part of a frame: physics (one frame of physics steps, expert
driving), the moving bodies' meshes, the LiDAR sweep, the camera frame. Targets (issue 3): LiDAR
≈ 6–7 ms for a 131k-ray sweep (≈ 20 M rays/s), camera ≤ 15 ms at 640x480, and the whole frame
(physics + LiDAR + camera) ≥ 20 Hz on a 2-core machine. ROS message conversion and publishing are
the simulator node's (bench_sim).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

LIDAR_TARGET_MS = 7.0
CAMERA_TARGET_MS = 15.0
RATE_TARGET_HZ = 20.0
FRAMES = 40
WARMUP = 3
SCENARIO = "oval_overtakes"


def sensor_costs(scenario: str = SCENARIO, frames: int = FRAMES, seed: int = 0) -> dict[str, np.ndarray]:
    """Milliseconds per frame of each part, over ``frames`` frames (after a warm-up)."""
    from simulation.simulation import Simulation

    sim = Simulation.from_scenario(scenario, seed=seed)
    sim.lidar_sweep()  # builds the world's meshes and ray-casting structures
    times: dict[str, list[float]] = {"physics": [], "bodies": [], "lidar": [], "camera": []}
    rays = sim.sensors.lidar.ray_count if sim.sensors.lidar else 0
    for frame in range(frames + WARMUP):
        start = time.perf_counter()
        sim.step_frame()
        physics = time.perf_counter()
        sim.sensors.dynamic_scene(sim.objects_table())
        bodies = time.perf_counter()
        sim.lidar_sweep()
        lidar = time.perf_counter()
        sim.camera_frame()
        camera = time.perf_counter()
        if frame >= WARMUP:
            for name, (a, b) in {
                "physics": (start, physics),
                "bodies": (physics, bodies),
                "lidar": (bodies, lidar),
                "camera": (lidar, camera),
            }.items():
                times[name].append((b - a) * 1e3)
    costs = {name: np.array(values) for name, values in times.items()}
    costs["rays"] = np.array([rays])
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=SCENARIO)
    parser.add_argument("--frames", type=int, default=FRAMES)
    args = parser.parse_args(argv)
    costs = sensor_costs(args.scenario, args.frames)
    rays = int(costs.pop("rays")[0])
    print(f"scenario {args.scenario}, {args.frames} frames, LiDAR {rays} rays, camera 640x480")
    print(f"{'part':<10}{'p50 ms':>10}{'p99 ms':>10}{'target':>16}")
    targets = {"lidar": f"<= {LIDAR_TARGET_MS:.0f} ms", "camera": f"<= {CAMERA_TARGET_MS:.0f} ms"}
    for name, values in costs.items():
        p50, p99 = np.percentile(values, [50, 99])
        print(f"{name:<10}{p50:>10.1f}{p99:>10.1f}{targets.get(name, ''):>16}")
    lidar_p50 = float(np.median(costs["lidar"]))
    print(f"LiDAR rays/s: {rays / lidar_p50 / 1e3:.1f} M (reference ≈ 20 M)")
    frame = sum(costs.values())
    rate = 1e3 / float(np.median(frame))
    print(f"frame (physics + bodies + LiDAR + camera, every frame): p50 {np.median(frame):.1f} ms "
          f"= {rate:.1f} Hz (target >= {RATE_TARGET_HZ:.0f} Hz)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
