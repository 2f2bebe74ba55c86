"""The main job end to end: a short closed-loop demo with its report, then lockstep evaluations of its bag.

Every node of the default graph runs as its own process through the real launcher; the bag is a
real rosbag2 file written by the recorder and replayed by the replayer.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from support import REPO, launched, run_command

from racestack.bags import BagWriter, MissingTopicError
from racestack.evaluation.runner import StackOptions, run_on_bag
from racestack.evaluation.scoring import score

pytestmark = pytest.mark.ros

PLOTS = ("bev", "reconstruction", "tracks", "risk_map", "trajectories", "detections", "latency")
PERCEPTION_ONLY = ["simulator", "flying_object_detector", "risk_map", "planner"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    run = run_command([sys.executable, "-m", "racestack.cli", "demo", "--duration", "3", "-o", str(out)],
                      timeout=240, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "demo: oval_pack" in run.stdout and "report:" in run.stdout
    return out


def test_demo_report_has_every_plot_and_metric(demo: Path) -> None:
    metrics = json.loads((demo / "metrics.json").read_text())
    for name in PLOTS:
        assert metrics["plots"][name], f"plot {name} missing: {metrics['skipped']}"
        assert (demo / metrics["plots"][name]).stat().st_size > 10_000
    values = metrics["metrics"]
    assert values["segmentation.miou"] > 0.5
    assert values["closed_loop.collisions"] == 0 and values["closed_loop.track_limit_violations"] == 0
    assert values["closed_loop.distance"] > 50.0
    assert values["frames"] >= 20 and values["dropped_ratio"] < 0.2
    assert {"/perception/bev/segmentation", "/planning/trajectory", "end_to_end"} <= set(metrics["latency_ms"])
    for node in ("simulator", "bev_segmentation", "bev_reconstruction", "tracker", "mpc_planner"):
        assert node in metrics["nodes"], f"no diagnostics from {node}"
    page = (demo / "report.html").read_text()
    assert all(f'src="{metrics["plots"][name]}"' in page for name in PLOTS)


def _comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith(("closed_loop", "planning"))}


def test_lockstep_evaluation_is_repeatable(demo: Path, tmp_path: Path) -> None:
    options = StackOptions(disable=PERCEPTION_ONLY)
    cards, runs = [], []
    for attempt in range(2):
        result = run_on_bag(demo / "run", options, tmp_path / f"run{attempt}", mode="lockstep", progress=False)
        assert not result.failures and result.timeouts == 0
        cards.append(score([demo / "run", result.output_bag], result))
        runs.append(f"run {attempt}: {len(result.published)} frames, {result.resent} resent")
    first, second = (_comparable(card.metrics) for card in cards)
    assert first["frames"] >= 20 and first["dropped_frames"] == 0
    assert "segmentation.miou" in first and "tracking.amota" in first
    assert first.keys() == second.keys()
    differ = {
        key: (value, second[key])
        for key, value in first.items()
        if value != second[key] and not (math.isnan(value) and math.isnan(second[key]))
    }
    assert not differ, f"metrics differ between two lockstep runs ({'; '.join(runs)}): {differ}"


def test_bag_without_ground_truth_is_scored_for_latency_only(demo: Path, tmp_path: Path) -> None:
    result = run_on_bag(demo / "run", StackOptions(disable=[*PERCEPTION_ONLY, "tracker", "object_extraction"]),
                        tmp_path / "ppn", mode="realtime", progress=False, warmup_frames=5)
    card = score([result.output_bag], result)
    assert "no ground truth" in card.skipped["segmentation"]
    assert result.warmup == 5 and card.metrics["warmup_frames"] == 5  # answered before the clock, not timed
    assert "end_to_end" in card.latency and card.latency["end_to_end"]["n"] >= 20


def test_bag_missing_an_input_topic_names_it(tmp_path: Path) -> None:
    bag = tmp_path / "odometry_only"
    with BagWriter(bag, "mcap") as writer:
        writer.add_topic("/localization/odometry", "nav_msgs/msg/Odometry")
    with pytest.raises(MissingTopicError, match="/sensing/lidar/points"):
        run_on_bag(bag, StackOptions(disable=PERCEPTION_ONLY), tmp_path / "out", progress=False)


def test_a_stack_not_ready_gets_its_late_nodes_restarted_once() -> None:
    """A node that missed a peer's discovery never catches up: waiting longer does not help, a
    restart does; and a stack still not ready after it is an error naming what is missing."""
    from racestack.evaluation.runner import EvaluationError, _wait_ready

    slots = {"stats": {"name": "topic_stats", "entry": "topic_stats"}}
    with launched(slots, heard=False) as session:
        first = session.nodes[0].popen.pid

        def restarted() -> bool:
            return session.nodes[0].popen.pid != first

        _wait_ready(session, restarted, "the first process still runs", 1.0, lambda: ["topic_stats"])
        assert session.running() == ["topic_stats"] and restarted()
        with pytest.raises(EvaluationError, match="not ready after 1 s \\(never\\)"):
            _wait_ready(session, lambda: False, "never", 1.0, lambda: ["topic_stats"])
