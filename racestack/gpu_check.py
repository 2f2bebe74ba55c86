"""The GPU check (``make gpu-check``): engines, TensorRT parity and latency, PPN parallelism, end to end.

Runs on a machine with a CUDA GPU and TensorRT (``pip install '.[tensorrt]'``), in well under
8 minutes on one H100: builds every engine (FP32 and FP16), compares TensorRT with PyTorch on the
GPU, times PyTorch-CUDA against TensorRT FP16, measures the PPN parallel/sequential throughput on
one GPU (two processes with their own streams vs one process running both nets) for the `paper`
configuration, and the full graph's end-to-end latency. Prints one table; exits non-zero on a
parity failure.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from racestack.engines import engine_for
from racestack.inference import NetworkSpec, TorchRunner, export_onnx, onnx_path_for
from racestack.networks import NETWORKS, resolve_networks

FP32_TOLERANCE = 1e-3
FP16_TOLERANCE = 2e-2
TARGETS_MS = {"ppn_segmentation_paper": 10.0, "ppn_reconstruction_paper": 10.0, "detector_640": 2.0,
              "tracker_3dmotformer": 2.0}


def relative_error(reference: tuple[np.ndarray, ...], candidate: tuple[np.ndarray, ...]) -> float:
    """Largest |difference| over the largest |reference| value, across outputs."""
    worst = 0.0
    for ref, out in zip(reference, candidate, strict=True):
        scale = max(float(np.max(np.abs(ref))), 1e-6) if ref.size else 1.0
        worst = max(worst, float(np.max(np.abs(ref.astype(np.float64) - out))) / scale if ref.size else 0.0)
    return worst


def timed(call, inputs, runs: int, sync) -> tuple[float, float]:
    for _ in range(5):
        call(*inputs)
    sync()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call(*inputs)
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


def paper_ppn_checkpoints(folder: Path) -> list[tuple[str, NetworkSpec, Path]]:
    """Randomly initialised `paper` nets: latency does not depend on the weights."""
    import torch

    from perception_nodes.ppn.config import preset
    from perception_nodes.ppn.models import network_spec, save_checkpoint
    from perception_nodes.ppn.networks import build

    torch.manual_seed(0)
    entries = []
    for kind in ("segmentation", "reconstruction"):
        path = folder / f"paper_{kind}.pt"
        save_checkpoint(path, kind, build(kind, preset("paper")).eval(), preset("paper"))
        entries.append((f"ppn_{kind}_paper", network_spec(kind), path))
    return entries


def detector_640(folder: Path) -> list[tuple[str, NetworkSpec, Path]]:
    from perception_nodes.flying_objects.detector import network_spec

    checkpoint = resolve_networks(["detector"])[0][1]
    return [("detector_640", network_spec((640, 640)), checkpoint)]


def check_network(label: str, spec: NetworkSpec, checkpoint: Path, device: str, runs: int) -> dict:
    import torch

    from racestack.engines import TensorRTRunner

    onnx_file = onnx_path_for(spec, checkpoint)
    if not onnx_file.is_file():
        export_onnx(spec, checkpoint, onnx_file, verify=False)
    reference = TorchRunner(spec, checkpoint, device)
    inputs = tuple(t.numpy() for t in spec.example_inputs(reference.module.cpu()))
    reference.module.to(device)
    expected = reference(*inputs)
    row = {"network": label}
    for precision in ("fp32", "fp16"):
        runner = TensorRTRunner(spec, engine_for(spec, onnx_file, device, precision, build=True), device)
        error = relative_error(expected, runner(*inputs))
        row[f"{precision}_error"] = error
        row[f"{precision}_ok"] = error <= (FP32_TOLERANCE if precision == "fp32" else FP16_TOLERANCE)
        if precision == "fp16":
            gpu_inputs = [torch.from_numpy(a).to(device) for a in inputs]
            row["trt_fp16_ms"] = timed(runner.run_torch, gpu_inputs, runs, runner.stream.synchronize)
    with torch.inference_mode():
        gpu_inputs = [torch.from_numpy(a).to(device) for a in inputs]
        row["torch_ms"] = timed(reference.module, gpu_inputs, runs, torch.cuda.synchronize)
    return row


def _ppn_worker(spec_kind: str, checkpoint: str, device: str, frames: int, ready, start, done) -> None:
    from perception_nodes.ppn.models import network_spec
    from racestack.engines import TensorRTRunner

    spec = network_spec(spec_kind)
    onnx_file = onnx_path_for(spec, Path(checkpoint))
    runner = TensorRTRunner(spec, engine_for(spec, onnx_file, device, "fp16"), device)
    import torch

    shape = tuple(runner.engine.get_tensor_shape(runner.input_names[0]))
    bev = torch.zeros(shape, device=device)
    runner.run_torch(bev)
    runner.stream.synchronize()
    ready.put(spec_kind)
    start.wait()
    for _ in range(frames):
        runner.run_torch(bev)
        runner.stream.synchronize()
    done.put(time.perf_counter())


def ppn_parallel_ratio(entries, device: str, frames: int = 200) -> tuple[float, float, float]:
    """(sequential s, parallel s, ratio): one process running both nets vs two processes, one per net."""
    import torch

    from racestack.engines import TensorRTRunner

    runners = []
    for _, spec, checkpoint in entries:
        runners.append(TensorRTRunner(spec, engine_for(spec, onnx_path_for(spec, checkpoint), device, "fp16"), device))
    inputs = [torch.zeros(tuple(r.engine.get_tensor_shape(r.input_names[0])), device=device) for r in runners]
    begin = time.perf_counter()
    for _ in range(frames):
        for runner, bev in zip(runners, inputs, strict=True):
            runner.run_torch(bev)
            runner.stream.synchronize()
    sequential = time.perf_counter() - begin
    del runners
    context = mp.get_context("spawn")
    ready, start, done = context.Queue(), context.Event(), context.Queue()
    workers = [
        context.Process(target=_ppn_worker, args=(kind, str(path), device, frames, ready, start, done))
        for kind, (_, _, path) in zip(("segmentation", "reconstruction"), entries, strict=True)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=300)
    begin = time.perf_counter()
    start.set()
    finished = max(done.get(timeout=300) for _ in workers)
    for worker in workers:
        worker.join()
    parallel = finished - begin
    return sequential, parallel, sequential / parallel


def end_to_end(device: str, seconds: float) -> dict:
    """The full graph on this GPU (TensorRT where engines exist), real time: cloud stamp -> trajectory."""
    from racestack.demo import closed_loop_latency

    return closed_loop_latency(device=device, seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m racestack.gpu_check")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--e2e-seconds", type=float, default=40.0)
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device")
        return 2
    try:
        import tensorrt
    except ImportError:
        print("gpu_check: TensorRT is not installed: run scripts/gpu_check.sh (installs the 'tensorrt' extra)")
        return 2
    print(f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}, TensorRT {tensorrt.__version__}")
    folder = Path(tempfile.mkdtemp(prefix="racestack-gpu-check-"))
    paper = paper_ppn_checkpoints(folder)
    entries = [(name, *pair) for name, pair in zip(NETWORKS, resolve_networks(["all"]), strict=True)]
    entries += paper + detector_640(folder)
    rows, ok = [], True
    for label, spec, checkpoint in entries:
        start = time.monotonic()
        row = check_network(label, spec, checkpoint, args.device, args.runs)
        ok &= row["fp32_ok"] and row["fp16_ok"]
        target = TARGETS_MS.get(label)
        print(
            f"{label:<26} parity fp32 {row['fp32_error']:.1e} ({'ok' if row['fp32_ok'] else 'FAIL'}, <= "
            f"{FP32_TOLERANCE:.0e}) fp16 {row['fp16_error']:.1e} ({'ok' if row['fp16_ok'] else 'FAIL'}, <= "
            f"{FP16_TOLERANCE:.0e}) | torch-cuda p50 {row['torch_ms'][0]:.2f} p99 {row['torch_ms'][1]:.2f} ms | "
            f"TensorRT fp16 p50 {row['trt_fp16_ms'][0]:.2f} p99 {row['trt_fp16_ms'][1]:.2f} ms"
            + (f" (target <= {target} ms)" if target else "")
            + f" [{time.monotonic() - start:.0f} s]",
            flush=True,
        )
        rows.append(row)
    sequential, parallel, ratio = ppn_parallel_ratio(paper, args.device)
    print(f"PPN paper on one GPU, 200 frames: sequential {sequential:.2f} s, parallel (2 processes) "
          f"{parallel:.2f} s, ratio {ratio:.2f}x", flush=True)
    if not args.skip_e2e:
        result = end_to_end(args.device, args.e2e_seconds)
        print(f"end to end (cloud in -> trajectory out): p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms "
              f"(target p99 <= 30 ms), dropped {result['dropped']:.1%}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
