"""Simulator: frames per wall second of the simulator node with the default rig, and the cost of each part.

1. The real ``simulator`` node (in this process, unpaced: ``realtime_factor`` 100) on a scenario with
   traffic, the default rig (LiDAR 128 x 1024 = 131k rays at 10 Hz, camera 640x480 at 10 Hz, frames
   at 20 Hz) and every ground-truth topic: frames per wall second, and per frame the time to make
   the messages (sensors, labels, conversion) and to step the physics. Target: >= 20 Hz.
2. Headless, every part every frame (``bench_sim_sensors.sensor_costs``): physics, moving bodies,
   LiDAR, camera, and the worst frame (all of them in one frame). Targets: LiDAR ≈ 7 ms, camera
   <= 15 ms, worst frame >= 20 Hz.

Run: ``.venv/bin/python -m bench.bench_sim [--scenario NAME] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.bench_sim_sensors import CAMERA_TARGET_MS, LIDAR_TARGET_MS, RATE_TARGET_HZ, sensor_costs

SCENARIO = "oval_overtakes"
WARMUP_FRAMES = 3


def node_rate(scenario: str, seconds: float) -> dict[str, float]:
    """Run the simulator node for ``seconds`` of simulated time as fast as it goes."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from racestack.contexts import close_private_node
    from racestack.stats import RollingStats
    from simulation.sim_node import SimulatorNode

    params = {"scenario": scenario, "realtime_factor": 100.0, "duration": seconds, "clock_mode": "realtime"}
    args = ["bench_sim", "--ros-args"] + [item for k, v in params.items() for item in ("-p", f"{k}:={v}")]
    rclpy.init(args=args)
    node = SimulatorNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while node.sim.frame < WARMUP_FRAMES:  # the first frame builds the world's meshes
            executor.spin_once(timeout_sec=0.1)
        node.monitor.processing_ms = RollingStats(10000)
        node.step_ms = RollingStats(10000)
        start, first = time.monotonic(), node.sim.frame
        while not node.finished:
            executor.spin_once(timeout_sec=0.1)
        wall = time.monotonic() - start
        frames = node.sim.frame - first
        messages = node.monitor.processing_ms.summary()
        physics = node.step_ms.summary()
    finally:
        close_private_node(node, node.context)
    return {
        "frames": frames,
        "rate": frames / wall,
        "messages_p50": messages["p50"],
        "messages_p99": messages["p99"],
        "physics_p50": physics["p50"],
        "physics_p99": physics["p99"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=SCENARIO)
    parser.add_argument("--seconds", type=float, default=5.0, help="simulated seconds for the node run")
    parser.add_argument("--frames", type=int, default=30, help="frames for the headless part costs")
    args = parser.parse_args(argv)

    node = node_rate(args.scenario, args.seconds)
    print(f"simulator node, scenario {args.scenario}, default rig, {node['frames']:.0f} frames (after a warm-up)")
    print(f"  frames per wall second: {node['rate']:.1f} Hz (target >= {RATE_TARGET_HZ:.0f} Hz)")
    print(f"  messages (sensors, labels, conversion) p50 {node['messages_p50']:.1f} ms, "
          f"p99 {node['messages_p99']:.1f} ms")  # fmt: skip
    print(f"  physics (one frame of steps, expert driving) p50 {node['physics_p50']:.1f} ms, "
          f"p99 {node['physics_p99']:.1f} ms")  # fmt: skip

    costs = sensor_costs(args.scenario, args.frames)
    wall = costs["wall"]
    targets = {"lidar": f"<= {LIDAR_TARGET_MS:.0f} ms", "camera": f"<= {CAMERA_TARGET_MS:.0f} ms"}
    print(f"headless parts, every part every frame ({args.frames} frames, LiDAR {int(costs['rays']['lidar'][0])} rays)")
    print(f"  {'part':<10}{'p50 ms':>9}{'p99 ms':>9}{'cpu p50':>9}  target")
    for name, values in wall.items():
        p50, p99 = np.percentile(values, [50, 99])
        print(f"  {name:<10}{p50:>9.1f}{p99:>9.1f}{np.median(costs['cpu'][name]):>9.1f}  {targets.get(name, '')}")
    worst = sum(wall.values())
    print(f"  worst frame (physics + bodies + LiDAR + camera): p50 {np.median(worst):.1f} ms = "
          f"{1e3 / float(np.median(worst)):.1f} Hz (target >= {RATE_TARGET_HZ:.0f} Hz)")  # fmt: skip
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} cores: wall times are inflated (see cpu p50)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
