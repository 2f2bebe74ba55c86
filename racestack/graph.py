"""Graph files -> process descriptions, shared by ``racestack launch`` and launch/racestack.launch.py.

A graph file names slots (tracker, planner, ppn, ...); each slot has implementations, each a list of
nodes. ``--swap``, ``--set`` and ``--disable`` edit the resolved graph before it becomes processes.
See docs/launching.md for the format.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from racestack.paths import resolve_share_path

# Fast DDS's LARGE_DATA transports (shared memory within a host, TCP between hosts, UDP only for
# discovery), sending messages of up to 4 MB whole. By default they cut anything over 64 KB into
# fragments, each its own shared-memory push, reader wake-up and reassembly copy: 25 for a 1.6 MB
# cloud. Measured here with 53 clouds/s of 1.6 MB, a reader taking 40 of them spent 110 ms of CPU per
# second instead of 30 (docs/architecture.md). Participants with plain LARGE_DATA still talk to these.
# A message stays in its writer's shared-memory segment (2 x sockets_size) until every reader has read
# it: 16 MB hold two 6.3 MB Ouster OS1-64 sweeps in flight, where 8 MB let the second overwrite the
# first while a busy reader had not read it yet (tests/test_bags_replay.py).
FASTDDS_TRANSPORTS = "LARGE_DATA?max_msg_size=4MB&sockets_size=8MB"

DEFAULT_ENVIRONMENT = {
    "FASTDDS_BUILTIN_TRANSPORTS": FASTDDS_TRANSPORTS,
    "PYTHONUNBUFFERED": "1",
    "RCUTILS_COLORIZED_OUTPUT": "0",
}


def use_stack_transports() -> None:
    """This process speaks the nodes' transports unless the user chose others: a participant on
    Fast DDS's default transports does not discover LARGE_DATA ones."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", FASTDDS_TRANSPORTS)


_NODE_KEYS = {
    "name",
    "entry",
    "executable",
    "parameters",
    "parameter_files",
    "remappings",
    "device",
    "environment",
    "args",
    "required",
    "threads",
    "nice",
    "cpus",
}


_CONTRACT_KEYS = ("inputs", "outputs")


NICE_VARIABLE = "RACESTACK_NICE"  # applied by racestack.entry in the node's process


class GraphError(ValueError):
    """A graph file or an override that cannot be used; the message names the key."""


@dataclass
class NodeSpec:
    name: str
    slot: str
    entry: str = ""
    executable: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    parameter_files: list[str] = field(default_factory=list)
    remappings: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    required: bool = True
    threads: int = 0
    nice: int = 0  # CPU priority below the others' (0-19): a branch the real-time chain must not wait on
    cpus: tuple[int, ...] = ()  # the cores its process may run on; () = any


@dataclass(frozen=True)
class SlotContract:
    """The topics a slot reads and writes, whatever implementation fills it (docs/interfaces.md)."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass
class Graph:
    name: str
    nodes: list[NodeSpec]
    environment: dict[str, str]
    parameters: dict[str, Any]
    parameter_files: list[str]
    choices: dict[str, str]
    contracts: dict[str, SlotContract] = field(default_factory=dict)

    def enabled_slots(self) -> list[str]:
        return list(dict.fromkeys(node.slot for node in self.nodes))

    def external_inputs(self) -> list[str]:
        """Topics the enabled slots read that none of them writes: what a bag or a vehicle must provide."""
        slots = self.enabled_slots()
        produced = {t for s in slots for t in self.contracts.get(s, SlotContract()).outputs}
        needed = [t for s in slots for t in self.contracts.get(s, SlotContract()).inputs if t not in produced]
        return list(dict.fromkeys(needed))

    def outputs(self) -> list[str]:
        slots = self.enabled_slots()
        return list(dict.fromkeys(t for s in slots for t in self.contracts.get(s, SlotContract()).outputs))


@dataclass
class ProcessSpec:
    """One OS process: what both launchers start."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    required: bool
    params_file: str
    cpus: tuple[int, ...] = ()


def load_graph_file(path: str | Path) -> dict[str, Any]:
    path = resolve_share_path(path, "launch/graphs", ".yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GraphError(f"graph file {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or "slots" not in data:
        raise GraphError(f"graph file {path}: missing key 'slots'")
    data.setdefault("name", path.stem)
    return data


def resolve_graph(
    data: dict[str, Any],
    swaps: dict[str, str] | None = None,
    sets: dict[str, dict[str, Any]] | None = None,
    disabled: set[str] | frozenset[str] = frozenset(),
) -> Graph:
    """Pick each slot's implementation (default or swapped), apply overrides, drop disabled nodes."""
    swaps, sets = dict(swaps or {}), dict(sets or {})
    slots = data.get("slots") or {}
    unknown = sorted(set(swaps) - set(slots))
    if unknown:
        raise GraphError(f"--swap: unknown slot '{unknown[0]}' (slots: {', '.join(slots)})")
    nodes, choices, contracts = [], {}, {}
    for slot, body in slots.items():
        contracts[slot] = _contract(slot, body)
        implementations, default = _implementations(slot, body)
        choice = swaps.get(slot, default)
        if choice not in implementations:
            raise GraphError(
                f"slot '{slot}': no implementation '{choice}' (have: {', '.join(implementations)})"
            )
        choices[slot] = choice
        if slot in disabled:
            continue
        for raw in implementations[choice]:
            node = _node_spec(slot, choice, raw)
            if node.name not in disabled:
                nodes.append(node)
    names = [n.name for n in nodes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GraphError(f"node name '{dupes[0]}' used twice")
    missing = sorted((set(sets) | set(disabled)) - set(slots) - _all_node_names(slots))
    if missing:
        raise GraphError(f"unknown node '{missing[0]}' (nodes: {', '.join(names)})")
    for node in nodes:
        node.parameters.update(sets.get(node.name, {}))
    return Graph(
        name=str(data.get("name", "graph")),
        nodes=nodes,
        environment={str(k): str(v) for k, v in (data.get("environment") or {}).items()},
        parameters=dict(data.get("parameters") or {}),
        parameter_files=list(data.get("parameter_files") or []),
        choices=choices,
        contracts=contracts,
    )


def parse_overrides(
    swap: list[str] | None, set_: list[str] | None
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """``--swap SLOT=IMPL`` and ``--set NODE.PARAM=VALUE`` (VALUE parsed as YAML) into dicts."""
    swaps: dict[str, str] = {}
    for item in swap or []:
        slot, sep, impl = item.partition("=")
        if not sep or not slot or not impl:
            raise GraphError(f"--swap expects SLOT=IMPL, got '{item}'")
        swaps[slot] = impl
    sets: dict[str, dict[str, Any]] = {}
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise GraphError(f"--set expects NODE.PARAM=VALUE, got '{item}'")
        sets.setdefault(node, {})[param] = yaml.safe_load(raw) if raw else ""
    return swaps, sets


def graph_to_processes(
    graph: Graph,
    run_dir: str | Path,
    python: str = sys.executable,
    base_env: dict[str, str] | None = None,
) -> list[ProcessSpec]:
    """One process per node: a params file in ``run_dir`` and the ``--ros-args`` command line."""
    run_dir = Path(run_dir)
    (run_dir / "params").mkdir(parents=True, exist_ok=True)
    base = dict(os.environ if base_env is None else base_env)
    shared_files = [str(resolve_share_path(f, "config/params")) for f in graph.parameter_files]
    processes = []
    for node in graph.nodes:
        params = {**graph.parameters, **node.parameters}
        params_file = run_dir / "params" / f"{node.name}.yaml"
        params_file.write_text(yaml.safe_dump({node.name: {"ros__parameters": params}}, sort_keys=True))
        cmd = [node.executable] if node.executable else [python, "-m", "racestack.entry", node.entry]
        cmd += [*node.args, "--ros-args", "-r", f"__node:={node.name}"]
        for path in shared_files + [str(resolve_share_path(f, "config/params")) for f in node.parameter_files]:
            cmd += ["--params-file", path]
        cmd += ["--params-file", str(params_file)]
        for src, dst in node.remappings.items():
            cmd += ["-r", f"{src}:={dst}"]
        env = {**base, **DEFAULT_ENVIRONMENT, **graph.environment, **node.environment}
        if node.threads:
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RACESTACK_THREADS"):
                env[var] = str(node.threads)
        if node.nice:
            env[NICE_VARIABLE] = str(node.nice)
        processes.append(
            ProcessSpec(name=node.name, cmd=cmd, env=env, required=node.required, params_file=str(params_file),
                        cpus=node.cpus)
        )
    return processes


def build_processes(
    graph_file: str | Path,
    run_dir: str | Path,
    swap: list[str] | None = None,
    set_: list[str] | None = None,
    disable: list[str] | None = None,
    transport: str = "",
) -> list[ProcessSpec]:
    """Graph file + command-line overrides -> processes (``racestack launch`` and the ROS launch file)."""
    swaps, sets = parse_overrides(swap, set_)
    graph = resolve_graph(load_graph_file(graph_file), swaps, sets, set(disable or []))
    processes = graph_to_processes(graph, run_dir)
    if transport:
        for spec in processes:
            spec.env["FASTDDS_BUILTIN_TRANSPORTS"] = transport
    return processes


def _contract(slot: str, body: Any) -> SlotContract:
    if not isinstance(body, dict):
        return SlotContract()
    topics = {}
    for key in ("inputs", "outputs"):
        value = body.get(key) or []
        if not isinstance(value, list) or not all(isinstance(t, str) and t.startswith("/") for t in value):
            raise GraphError(f"slot '{slot}': '{key}' must be a list of absolute topic names")
        topics[key] = tuple(value)
    return SlotContract(**topics)


def _implementations(slot: str, body: Any) -> tuple[dict[str, list[dict]], str]:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in _CONTRACT_KEYS}
    if isinstance(body, dict) and "implementations" in body:
        impls = body["implementations"]
        if not isinstance(impls, dict) or not impls:
            raise GraphError(f"slot '{slot}': 'implementations' must be a non-empty mapping")
        impls = {k: (v if isinstance(v, list) else [v]) for k, v in impls.items()}
        default = str(body.get("default", next(iter(impls))))
        return impls, default
    if isinstance(body, dict | list):
        return {"default": body if isinstance(body, list) else [body]}, "default"
    raise GraphError(f"slot '{slot}': expected a node, a list of nodes or 'implementations'")


def _all_node_names(slots: dict[str, Any]) -> set[str]:
    names = set()
    for slot, body in slots.items():
        implementations, _ = _implementations(slot, body)
        names |= {str(raw.get("name", "")) for nodes in implementations.values() for raw in nodes}
    return names


def _nice(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
        raise GraphError(f"{where}: 'nice' must be an integer from 0 to 19, got {value!r}")
    return value


def _cpus(value: Any, where: str) -> tuple[int, ...]:
    """Cores as given, each one this process may run on: a graph pinned to cores a machine lacks
    fails at launch naming them, not as a node that never starts."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value or any(isinstance(c, bool) or not isinstance(c, int) for c in value):
        raise GraphError(f"{where}: 'cpus' must be a non-empty list of core numbers, got {value!r}")
    available = sorted(os.sched_getaffinity(0))
    missing = sorted(set(value) - set(available))
    if missing:
        raise GraphError(f"{where}: 'cpus' names {missing}, not among this machine's cores {available}")
    return tuple(sorted(set(value)))


def _node_spec(slot: str, impl: str, raw: Any) -> NodeSpec:
    where = f"slot '{slot}', implementation '{impl}'"
    if not isinstance(raw, dict):
        raise GraphError(f"{where}: a node must be a mapping")
    unknown = sorted(set(raw) - _NODE_KEYS)
    if unknown:
        raise GraphError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(_NODE_KEYS))})")
    if "name" not in raw:
        raise GraphError(f"{where}: missing key 'name'")
    if not raw.get("entry") and not raw.get("executable"):
        raise GraphError(f"{where}, node '{raw['name']}': missing key 'entry' (or 'executable')")
    params = copy.deepcopy(raw.get("parameters") or {})
    if "device" in raw:
        params["device"] = str(raw["device"])
    return NodeSpec(
        name=str(raw["name"]),
        slot=slot,
        entry=str(raw.get("entry", "")),
        executable=str(raw.get("executable", "")),
        parameters=params,
        parameter_files=list(raw.get("parameter_files") or []),
        remappings={str(k): str(v) for k, v in (raw.get("remappings") or {}).items()},
        environment={str(k): str(v) for k, v in (raw.get("environment") or {}).items()},
        args=[str(a) for a in raw.get("args") or []],
        required=bool(raw.get("required", True)),
        threads=int(raw.get("threads", 0)),
        nice=_nice(raw.get("nice", 0), f"{where}, node '{raw['name']}'"),
        cpus=_cpus(raw.get("cpus"), f"{where}, node '{raw['name']}'"),
    )
