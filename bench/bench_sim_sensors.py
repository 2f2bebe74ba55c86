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
import os
import time

import numpy as np

LIDAR_TARGET_MS = 7.0
CAMERA_TARGET_MS = 15.0
RATE_TARGET_HZ = 20.0
FRAMES = 40
WARMUP = 3
SCENARIO = "oval_overtakes"


def sensor_costs(scenario: str = SCENARIO, frames: int = FRAMES, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Wall and CPU milliseconds per frame of each part, over ``frames`` frames (after a warm-up).

    CPU time (all threads of this process) is what a part costs whatever else the machine runs;
    on an idle 2-core machine the wall time of a part is about its CPU time, half of it for ray
    casting (Open3D uses both cores).
    """
    from simulation.simulation import Simulation

    sim = Simulation.from_scenario(scenario, seed=seed)
    sim.lidar_sweep()  # builds the world's meshes and ray-casting structures
    parts = {
        "physics": sim.step_frame,
        "bodies": lambda: sim.sensors.dynamic_scene(sim.objects_table()),
        "lidar": sim.lidar_sweep,
        "camera": sim.camera_frame,
    }
    wall: dict[str, list[float]] = {name: [] for name in parts}
    cpu: dict[str, list[float]] = {name: [] for name in parts}
    for frame in range(frames + WARMUP):
        for name, part in parts.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            part()
            if frame >= WARMUP:
                wall[name].append((time.perf_counter() - start) * 1e3)
                cpu[name].append((time.process_time() - start_cpu) * 1e3)
    rays = sim.sensors.lidar.ray_count if sim.sensors.lidar else 0
    return {
        "wall": {k: np.array(v) for k, v in wall.items()},
        "cpu": {k: np.array(v) for k, v in cpu.items()},
        "rays": {"lidar": np.array([rays])},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=SCENARIO)
    parser.add_argument("--frames", type=int, default=FRAMES)
    args = parser.parse_args(argv)
    costs = sensor_costs(args.scenario, args.frames)
    rays = int(costs["rays"]["lidar"][0])
    wall, cpu = costs["wall"], costs["cpu"]
    print(f"scenario {args.scenario}, {args.frames} frames, LiDAR {rays} rays, camera 640x480")
    print(f"{'part':<10}{'wall p50':>10}{'wall p99':>10}{'cpu p50':>10}{'target':>14}")
    targets = {"lidar": f"<= {LIDAR_TARGET_MS:.0f} ms", "camera": f"<= {CAMERA_TARGET_MS:.0f} ms"}
    for name, values in wall.items():
        p50, p99 = np.percentile(values, [50, 99])
        print(f"{name:<10}{p50:>10.1f}{p99:>10.1f}{np.median(cpu[name]):>10.1f}{targets.get(name, ''):>14}")
    print(f"LiDAR rays/s (wall): {rays / float(np.median(wall['lidar'])) / 1e3:.1f} M (reference ≈ 20 M)")
    frame = sum(wall.values())
    rate = 1e3 / float(np.median(frame))
    print(f"frame (physics + bodies + LiDAR + camera, every frame): p50 {np.median(frame):.1f} ms "
          f"= {rate:.1f} Hz (target >= {RATE_TARGET_HZ:.0f} Hz)")  # fmt: skip
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores: wall times are inflated, see cpu p50")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
