"""Parameter validation and graph resolution (the logic both launchers share)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from racestack.errors import ParameterError
from racestack.graph import (
    FASTDDS_TRANSPORTS,
    GraphError,
    ProcessSpec,
    build_processes,
    graph_to_processes,
    parse_overrides,
    resolve_graph,
)
from racestack.launcher import LaunchSession
from racestack.params import Param, validate, validate_all

SPECS = [
    Param("rate", 10.0, "Hz", min=1.0, max=100.0),
    Param("backend", "auto", "inference backend", choices=("auto", "torch")),
    Param("topics", ["/a"], "inputs"),
    Param("depth", 3, "queue", min=1),
]


def test_params_coerce_and_validate() -> None:
    values = validate_all(SPECS, {"rate": 20, "topics": ["/x", "/y"]})
    assert values == {"rate": 20.0, "backend": "auto", "topics": ["/x", "/y"], "depth": 3}


@pytest.mark.parametrize(
    "name, value, text",
    [
        ("rate", 0.5, "below the minimum"),
        ("rate", float("nan"), "NaN"),
        ("backend", "tensorflow", "not one of"),
        ("topics", "/a", "expected a list"),
        ("depth", 2.5, "expected int"),
        ("depth", True, "expected int"),
    ],
)
def test_invalid_values_name_the_parameter(name, value, text) -> None:
    spec = next(s for s in SPECS if s.name == name)
    with pytest.raises(ParameterError, match=f"parameter '{name}'.*{text}"):
        validate(spec, value)


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ParameterError, match="'rat'"):
        validate_all(SPECS, {"rat": 1.0})


GRAPH = {
    "name": "g",
    "environment": {"A": "1"},
    "parameters": {"use_sim_time": True},
    "slots": {
        "sensor": {"name": "sensor", "entry": "cloud_relay"},
        "tracker": {
            "default": "former",
            "implementations": {
                "former": {"name": "tracker", "entry": "tracker", "parameters": {"method": "3dmotformer"}},
                "kalman": {"name": "tracker", "entry": "tracker", "parameters": {"method": "kalman"}},
            },
        },
        "ppn": {
            "default": "parallel",
            "implementations": {
                "parallel": [{"name": "seg", "entry": "bev_segmentation", "device": "cuda:0"},
                             {"name": "rec", "entry": "bev_reconstruction", "device": "cuda:1", "threads": 1}],
                "sequential": [{"name": "seq", "entry": "ppn_sequential", "nice": 5}],
            },
        },
    },
}


def test_resolve_default_swap_set_disable() -> None:
    graph = resolve_graph(GRAPH)
    assert [n.name for n in graph.nodes] == ["sensor", "tracker", "seg", "rec"]
    assert graph.nodes[2].parameters["device"] == "cuda:0"
    swaps, sets = parse_overrides(["tracker=kalman", "ppn=sequential"], ["tracker.max_age=5", "seq.rate=2.5"])
    graph = resolve_graph(GRAPH, swaps, sets, {"sensor"})
    assert [n.name for n in graph.nodes] == ["tracker", "seq"]
    assert graph.nodes[0].parameters == {"method": "kalman", "max_age": 5}
    assert graph.nodes[1].parameters == {"rate": 2.5}
    assert graph.choices == {"sensor": "default", "tracker": "kalman", "ppn": "sequential"}


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"swaps": {"nope": "x"}}, "unknown slot 'nope'"),
        ({"swaps": {"tracker": "ukf"}}, "no implementation 'ukf'"),
        ({"sets": {"ghost": {"a": 1}}}, "unknown node 'ghost'"),
        ({"disabled": {"ghost"}}, "unknown node 'ghost'"),
    ],
)
def test_bad_overrides_are_named(kwargs, text) -> None:
    with pytest.raises(GraphError, match=text):
        resolve_graph(GRAPH, **kwargs)


def test_bad_node_keys_are_named() -> None:
    with pytest.raises(GraphError, match="unknown key 'paramters'"):
        resolve_graph({"slots": {"a": {"name": "a", "entry": "x", "paramters": {}}}})
    with pytest.raises(GraphError, match="missing key 'entry'"):
        resolve_graph({"slots": {"a": {"name": "a"}}})
    with pytest.raises(GraphError, match=r"--set expects NODE\.PARAM=VALUE"):
        parse_overrides([], ["justakey=1"])


def test_processes_carry_params_remaps_env_and_threads(tmp_path) -> None:
    data = dict(GRAPH, slots={**GRAPH["slots"], "sensor": {"name": "sensor", "entry": "cloud_relay",
                                                            "remappings": {"/in": "/points"}}})
    processes = graph_to_processes(resolve_graph(data), tmp_path, python="py", base_env={"PATH": "/bin"})
    sensor = processes[0]
    assert sensor.cmd[:4] == ["py", "-m", "racestack.entry", "cloud_relay"]
    assert sensor.cmd[5:7] == ["-r", "__node:=sensor"] and "/in:=/points" in sensor.cmd
    assert sensor.env["FASTDDS_BUILTIN_TRANSPORTS"] == FASTDDS_TRANSPORTS and sensor.env["A"] == "1"
    params = yaml.safe_load(Path(sensor.params_file).read_text())
    assert params == {"sensor": {"ros__parameters": {"use_sim_time": True}}}
    rec = next(p for p in processes if p.name == "rec")
    assert rec.env["OMP_NUM_THREADS"] == "1"
    assert yaml.safe_load(Path(rec.params_file).read_text())["rec"]["ros__parameters"]["device"] == "cuda:1"


def test_nice_reaches_the_process_and_lowers_its_priority(tmp_path) -> None:
    swaps, _ = parse_overrides(["ppn=sequential"], [])
    processes = graph_to_processes(resolve_graph(GRAPH, swaps), tmp_path, base_env={"PATH": "/bin"})
    seq = next(p for p in processes if p.name == "seq")
    assert seq.env["RACESTACK_NICE"] == "5" and "RACESTACK_NICE" not in processes[0].env
    niceness = subprocess.run(
        [sys.executable, "-m", "racestack.entry", "support:print_niceness"],
        cwd=Path(__file__).parent, env={**os.environ, "RACESTACK_NICE": "5"}, capture_output=True, text=True,
        timeout=60,
    )
    assert niceness.stdout.split() == [str(os.nice(0) + 5)], niceness.stderr
    bad = dict(GRAPH, slots={**GRAPH["slots"], "sensor": {"name": "sensor", "entry": "cloud_relay", "nice": 40}})
    with pytest.raises(GraphError, match="node 'sensor': 'nice' must be an integer from 0 to 19"):
        resolve_graph(bad)


def test_cpus_pin_every_thread_of_the_launched_process(tmp_path) -> None:
    core = max(os.sched_getaffinity(0))
    graph = {"name": "pinned", "slots": {"pinned": {"name": "pinned", "executable": "/bin/true", "cpus": [core]}}}
    spec = graph_to_processes(resolve_graph(graph), tmp_path)[0]
    assert spec.cpus == (core,)
    # a thread started after the exec, as DDS's are, runs on the node's cores too
    script = (
        "import os, threading\nseen = []\n"
        "worker = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))\n"
        "worker.start()\nworker.join()\nprint(sorted(os.sched_getaffinity(0)), seen[0], flush=True)\n"
        "import time\ntime.sleep(30)\n"
    )
    lines: list[str] = []
    pinned = ProcessSpec("pinned", [sys.executable, "-c", script], dict(os.environ), True, "", cpus=spec.cpus)
    with LaunchSession([pinned], echo=lines.append) as session:
        deadline = time.monotonic() + 30.0
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.running() == ["pinned"]
    assert lines and lines[0].endswith(f"[{core}] [{core}]"), lines
    not_a_list = "must be a non-empty list"
    for bad, message in (([], not_a_list), ("0", not_a_list), ([9999], r"names \[9999\], not among")):
        broken = {"name": "pinned", "slots": {"pinned": {"name": "pinned", "executable": "/bin/true", "cpus": bad}}}
        with pytest.raises(GraphError, match=f"node 'pinned': 'cpus' {message}"):
            resolve_graph(broken)


def test_shipped_graphs_resolve(tmp_path) -> None:
    processes = build_processes("default", tmp_path, swap=["tracker=kalman", "planner=pure_pursuit"])
    names = [p.name for p in processes]
    assert "simulator" in names and "pure_pursuit" in names and "mpc_planner" not in names
    assert all(p.cmd[0] == sys.executable for p in processes)
    assert build_processes("smoke", tmp_path, transport="SHM")[0].env["FASTDDS_BUILTIN_TRANSPORTS"] == "SHM"


def test_a_restarted_process_keeps_its_launch_place() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    specs = [ProcessSpec(name, sleeper, dict(os.environ), True, "") for name in ("first", "second", "third")]
    lines: list[str] = []
    with LaunchSession(specs, echo=lines.append) as session:
        first_pid = session.nodes[0].popen.pid
        session.restart(["first"])
        assert session.running() == ["first", "second", "third"]
        assert session.nodes[0].popen.pid != first_pid
    assert session.running() == []
