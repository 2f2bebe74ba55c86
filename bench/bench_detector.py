"""Flying-object detector: end-to-end node latency per backend, and the cost of pre+postprocessing.

The node runs in its own process (started like the launcher does); this process publishes 640x480
rgb8 frames rendered by the simulator, one at a time at 10 Hz, and measures image stamp -> arrival
of the 2D detections (through DDS). Targets (issue 5): CPU default (ONNX Runtime) p50 <= 60 ms;
preprocessing + postprocessing <= 5 ms. Without options it measures the node's defaults (the int8
ONNX file at 672x896 on two threads: the CPU default model), the lite graph's setting (its int8 file
on one thread) and the float checkpoint at 320x416 on one thread with ONNX Runtime and PyTorch; any
option measures that one setup.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from racestack.graph import use_stack_transports

FRAMES = 60
WARMUP = 5
LATENCY_TARGET_MS = 60.0
PRE_POST_TARGET_MS = 5.0
SIZE = (480, 640)
SCENARIO = "circuit_a"


def sim_frames(count: int) -> list[np.ndarray]:
    """640x480 camera frames with flying objects, from the simulator (a training scenario)."""
    from perception_nodes.flying_objects.dataset import render_samples

    frames = [sample.image for sample in render_samples(SCENARIO, None, count, every=3, flying_count=12)]
    assert all(frame.shape[:2] == SIZE for frame in frames), "the scenario's camera is not 640x480"
    return frames


def percentiles(values: list[float]) -> tuple[float, float]:
    sample = np.asarray(values, dtype=np.float64)
    return float(np.percentile(sample, 50)), float(np.percentile(sample, 99))


def pre_post_cost(
    frames: list[np.ndarray], weights: str, input_size: list[int], repeats: int = 200
) -> dict[str, tuple[float, float]]:
    """p50/p99 (ms) of letterbox+normalize and decode+NMS+rescale, on real head outputs."""
    from perception_nodes.flying_objects.detector import DetectorConfig, FlyingObjectDetector

    config = DetectorConfig(weights=weights, backend="onnxruntime", input_size=input_size)
    detector = FlyingObjectDetector(config, log=lambda _: None)
    outputs = [detector.infer(frame) for frame in frames[:10]]
    pre, post, total = [], [], []
    for i in range(repeats):
        frame = frames[i % len(frames)]
        start = time.perf_counter()
        detector.preprocess(frame)
        mid = time.perf_counter()
        detector.postprocess(*outputs[i % len(outputs)])
        end = time.perf_counter()
        pre.append((mid - start) * 1e3)
        post.append((end - mid) * 1e3)
        total.append((end - start) * 1e3)
    return {"preprocess": percentiles(pre), "postprocess": percentiles(post), "total": percentiles(total)}


def weights_path() -> str:
    from racestack.paths import models_dir

    return str(models_dir() / "detector_yolov8n" / "weights.pt")


@contextmanager
def detector_process(backend: str, weights: str, threads: int, input_size: list[int]):
    """The detector node in its own process, as ``racestack launch`` starts it."""
    from racestack.graph import graph_to_processes, resolve_graph
    from racestack.launcher import LaunchSession

    node = {
        "name": "flying_object_detector",
        "entry": "flying_object_detector",
        "threads": threads,
        "parameters": {
            "backend": backend,
            "weights": weights,
            "max_input_age": 0.0,
            "debug_image": False,
            "input_size": input_size,
        },
    }
    graph = resolve_graph({"name": "bench", "slots": {"detector": node}, "parameters": {}})
    with tempfile.TemporaryDirectory(prefix="racestack-bench-") as run_dir:
        session = LaunchSession(graph_to_processes(graph, run_dir), echo=lambda line: None)
        session.start()
        try:
            yield session
        finally:
            session.stop()


def node_latency(
    frames: list[np.ndarray], backend: str, weights: str, threads: int, input_size: list[int], rate: float
) -> dict[str, float]:
    """Stamp -> 2D detections received, one frame in flight at a time."""
    from sensor_msgs.msg import Image, PointCloud2

    from racestack.image import array_to_image
    from racestack.node import sensor_qos, stamp_to_ns
    from racestack.probe import Probe

    arrivals: dict[int, int] = {}

    def on_boxes(msg: PointCloud2) -> None:
        arrivals[stamp_to_ns(msg.header.stamp)] = time.time_ns()

    latencies: list[float] = []
    with (
        detector_process(backend, weights, threads, input_size) as session,
        Probe(f"bench_detector_{backend}") as probe,
    ):
        probe.collect(PointCloud2, "/perception/flying_objects/detections_2d", callback=on_boxes)
        publisher = probe.publisher(Image, "/sensing/camera/image_raw", sensor_qos())
        if not probe.wait_for_subscribers("/sensing/camera/image_raw", 1, 120.0):
            raise RuntimeError(f"{backend}: the detector never subscribed ({session.failures})")
        probe.wait_for(lambda: probe.node.count_publishers("/perception/flying_objects/detections_2d") > 0, 10.0)
        time.sleep(0.5)
        for i in range(FRAMES + WARMUP):
            msg = array_to_image(frames[i % len(frames)], "rgb8")
            msg.header.frame_id = "camera_optical"
            msg.header.stamp = probe.node.get_clock().now().to_msg()
            stamp = stamp_to_ns(msg.header.stamp)
            publisher.publish(msg)
            started = time.monotonic()
            probe.wait_for(lambda stamp=stamp: stamp in arrivals, 5.0, poll_s=0.0005)
            if stamp in arrivals and i >= WARMUP:
                latencies.append((arrivals[stamp] - stamp) / 1e6)
            time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
    p50, p99 = percentiles(latencies) if latencies else (float("nan"), float("nan"))
    return {"p50": p50, "p99": p99, "received": len(latencies), "sent": FRAMES}


@dataclass(frozen=True)
class Setup:
    """One measured configuration of the node."""

    label: str
    weights: str
    backend: str
    threads: int
    input_size: list[int]


def default_setups() -> list[Setup]:
    """The node's defaults (the CPU default model), the lite graph's setting, the float checkpoint."""
    from perception_nodes.flying_objects.detector import DEFAULT_WEIGHTS, read_model_info
    from racestack.paths import models_dir, share_dir

    lite = yaml.safe_load((share_dir() / "config" / "params" / "lite.yaml").read_text())
    onnx_files = [
        str(models_dir() / DEFAULT_WEIGHTS),
        str(models_dir() / lite["flying_object_detector"]["ros__parameters"]["weights"]),
    ]
    default, lite_graph = ((path, list(read_model_info(path).input_hw)) for path in onnx_files)
    return [
        Setup("node default", default[0], "onnxruntime", 2, default[1]),
        Setup("lite graph", lite_graph[0], "onnxruntime", 1, lite_graph[1]),
        Setup("float checkpoint", weights_path(), "onnxruntime", 1, [320, 416]),
        Setup("float checkpoint", weights_path(), "torch", 1, [320, 416]),
    ]


def chosen_setups(args: argparse.Namespace) -> list[Setup]:
    """The default setups, or the one the options describe when any is given."""
    if args.backends is None and args.threads is None and args.input_size is None and args.weights is None:
        return default_setups()
    from perception_nodes.flying_objects.detector import read_model_info

    weights = args.weights or weights_path()
    fixed = read_model_info(weights).input_hw
    size = list(fixed) if fixed else args.input_size or [320, 416]
    return [Setup("chosen", weights, b, args.threads or 1, size) for b in (args.backends or "onnxruntime").split(",")]


def report_pre_post(frames: list[np.ndarray], setup: Setup) -> None:
    size = "x".join(map(str, setup.input_size))
    for name, (p50, p99) in pre_post_cost(frames, setup.weights, setup.input_size).items():
        target = f"  (target p50 <= {PRE_POST_TARGET_MS:g} ms)" if name == "total" else ""
        print(f"detector {name:<11} 640x480 image, {size} input: p50 {p50:.2f} ms, p99 {p99:.2f} ms{target}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_detector", description=__doc__)
    parser.add_argument("--backends", help="comma-separated backends to measure (default onnxruntime)")
    parser.add_argument("--threads", type=int, help="inference threads (default 1)")
    parser.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        help="network input [h, w] (default the lite graph's 320 416; 480 640 is the camera's own size)",
    )
    parser.add_argument("--weights", help="checkpoint or ONNX file (its fixed input wins; default weights.pt)")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second sent")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    use_stack_transports()
    # an ONNX cache of its own (the node exports the detector into it), removed at the end
    with tempfile.TemporaryDirectory(prefix="racestack-bench-cache-") as cache:
        os.environ.setdefault("RACESTACK_CACHE", cache)
        frames = sim_frames(10)
        setups = chosen_setups(args)
        for setup in {(s.weights, tuple(s.input_size)): s for s in setups}.values():
            report_pre_post(frames, setup)
        for setup in setups:
            result = node_latency(frames, setup.backend, setup.weights, setup.threads, setup.input_size, args.rate)
            target = f"  (target p50 <= {LATENCY_TARGET_MS:g} ms)" if setup.backend == "onnxruntime" else ""
            print(
                f"detector node {setup.label}, {setup.backend}, {Path(setup.weights).name}, 640x480 image, "
                f"{'x'.join(map(str, setup.input_size))} input, {setup.threads} thread(s), image stamp -> detections: "
                f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, answered {result['received']}/"
                f"{result['sent']}{target}"
            )


if __name__ == "__main__":
    main()
