"""``racestack launch``: every node of a graph in its own OS process, logs prefixed, clean stop.

A node that dies is reported with its exit code and last log lines; a required node's death stops
the whole launch (exit 1) instead of leaving a half-working stack running.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from racestack.graph import GraphError, ProcessSpec, build_processes
from racestack.shm import remove_stale_segments

# A node killed before it deleted its DDS participant leaves shared-memory ports and TCP channels
# that later graphs trip over (topics that never match): SIGINT gets time for a clean exit even when
# eight heavy nodes leave at once on two loaded cores (2.6 s measured on a quiet machine).
STOP_GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1
KILL_GRACE_S = 3.0
TAIL_LINES = 100  # enough for a fatal signal's dump of every thread's stack
REPORT_LINES = 10


@dataclass
class NodeProcess:
    spec: ProcessSpec
    popen: subprocess.Popen
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    reader: threading.Thread | None = None
    reported: bool = False


class LaunchSession:
    """Starts process specs, streams their output, watches for deaths, stops them all."""

    def __init__(self, processes: list[ProcessSpec], echo: Callable[[str], None] | None = None) -> None:
        self.specs = processes
        self.echo = echo or (lambda line: print(line, flush=True))
        self.nodes: list[NodeProcess] = []
        self.failures: list[str] = []

    def start(self, only: Collection[str] | None = None) -> LaunchSession:
        """Start every node (or those named in ``only``) that is not running yet."""
        if not self.nodes:
            warning = transport_warning(self.specs[0].env) if self.specs else None
            if warning:
                self.echo(f"[racestack launch] warning: {warning}")
            removed = remove_stale_segments()
            if removed:
                self.echo(f"[racestack launch] removed {len(removed)} shared-memory segment(s) of dead DDS processes")
        started = {n.spec.name for n in self.nodes}
        for spec in self.specs:
            if spec.name in started or (only is not None and spec.name not in only):
                continue
            popen = subprocess.Popen(
                spec.cmd,
                env=spec.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=partial(_prepare_child, spec.cpus),
                text=True,
                errors="replace",
                bufsize=1,
            )
            node = NodeProcess(spec=spec, popen=popen)
            node.reader = threading.Thread(target=self._pump, args=(node,), daemon=True)
            node.reader.start()
            self.nodes.append(node)
        order = {spec.name: i for i, spec in enumerate(self.specs)}
        self.nodes.sort(key=lambda n: order[n.spec.name])  # a restarted node keeps its launch place
        return self

    def _pump(self, node: NodeProcess) -> None:
        width = max(len(n.name) for n in self.specs)
        for line in node.popen.stdout:
            line = line.rstrip("\n")
            node.tail.append(line)
            self.echo(f"[{node.spec.name:<{width}}] {line}")

    def check(self) -> list[NodeProcess]:
        """Newly exited nodes, each reported once with its exit code and last lines."""
        dead = []
        for node in self.nodes:
            code = node.popen.poll()
            if code is None or node.reported:
                continue
            node.reported = True
            if node.reader is not None:
                node.reader.join(timeout=1.0)
            last = "\n    ".join(last_lines(list(node.tail), code)) or "(no output)"
            report = f"node '{node.spec.name}' exited with code {code}; last lines:\n    {last}"
            self.failures.append(report)
            self.echo(f"[racestack launch] {report}")
            dead.append(node)
        return dead

    def running(self) -> list[str]:
        """Names of the live nodes, in launch order."""
        return [n.spec.name for n in self.nodes if n.popen.poll() is None]

    def wait(self, duration_s: float | None = None, poll_s: float = 0.1) -> int:
        """Run until a required node dies (1), all nodes end (0 or 1), or ``duration_s`` passes (0)."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while deadline is None or time.monotonic() < deadline:
            dead = self.check()
            if any(n.spec.required for n in dead):
                return 1
            if not self.running():
                return 1 if self.failures else 0
            time.sleep(poll_s)
        return 0

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGINT to every node, SIGTERM after ``grace_s``, SIGKILL after that."""
        _stop(self.nodes, grace_s)

    def restart(self, names: Collection[str]) -> None:
        """Stops the named nodes and starts them again, as new processes."""
        nodes = [n for n in self.nodes if n.spec.name in names]
        _stop(nodes, STOP_GRACE_S)
        self.nodes = [n for n in self.nodes if n not in nodes]
        self.start(only=[n.spec.name for n in nodes])

    def __enter__(self) -> LaunchSession:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop(nodes: list[NodeProcess], grace_s: float) -> None:
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 2.0)):
        alive = [n for n in nodes if n.popen.poll() is None]
        if not alive:
            break
        for node in alive:
            _signal_group(node.popen, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(n.popen.poll() is None for n in alive):
            time.sleep(0.02)
    for node in nodes:
        node.reported = True
        if node.reader is not None:
            node.reader.join(timeout=1.0)


def _prepare_child(cpus: tuple[int, ...]) -> None:
    """In the child, before its program starts: SIGTERM when the launcher dies, even by SIGKILL (no
    orphaned nodes), and the node's cores, inherited by every thread it will start (DDS's included)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if cpus:
        os.sched_setaffinity(0, cpus)


def last_lines(tail: list[str], code: int) -> list[str]:
    """What a dead node's report quotes: its last lines, or, killed by a fatal signal, the whole dump
    of its threads' stacks (racestack.process.own_process) and the line it printed before it.

    Ten lines of a dump showed CI only the outermost frames of a node's SIGSEGV, not where it died.
    The dump's list of extension modules says nothing about the crash and is left out.
    """
    starts = [i for i, line in enumerate(tail) if line.startswith("Fatal Python error")]
    if code >= 0 or not starts:
        return tail[-REPORT_LINES:]
    return [line for line in tail[max(starts[-1] - 1, 0):] if not line.startswith("Extension modules:")]


def transport_warning(env: dict[str, str]) -> str | None:
    """Why large messages will be slow in this environment, if they will."""
    local = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST"
    if local and env.get("FASTDDS_BUILTIN_TRANSPORTS", "").startswith("LARGE_DATA"):
        return (
            "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST makes rmw_fastrtps use loopback UDP only, which disables "
            "the LARGE_DATA shared-memory transport (a 3.2 MB cloud: ~36 ms instead of ~4 ms); isolate with "
            "ROS_DOMAIN_ID instead"
        )
    return None


def _signal_group(popen: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, sig)


def processes_for(args: argparse.Namespace, run_dir: str | Path) -> list[ProcessSpec]:
    """The processes a ``racestack launch`` command line describes."""
    return build_processes(args.graph, run_dir, args.swap, args.set, args.disable, args.transport)


def add_graph_arguments(parser: argparse.ArgumentParser, default_graph: str = "default") -> None:
    """The graph options every command that starts the stack shares (launch, demo, evaluate, ablate)."""
    parser.add_argument("graph", nargs="?", default=default_graph, help="graph file or name in launch/graphs")
    parser.add_argument("--swap", action="append", metavar="SLOT=IMPL", help="use another implementation")
    parser.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help="override a parameter")
    parser.add_argument("--disable", action="append", metavar="NODE", help="leave a node (or slot) out")
    parser.add_argument(
        "--transport",
        default="",
        help="FASTDDS_BUILTIN_TRANSPORTS for every node (default: the graph's, racestack.graph.FASTDDS_TRANSPORTS)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    add_graph_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="racestack-launch-") as run_dir:
        return _launch(args, run_dir)


def _launch(args: argparse.Namespace, run_dir: str) -> int:
    """``racestack launch`` with the nodes' parameter files in ``run_dir``."""
    try:
        processes = processes_for(args, run_dir)
    except (GraphError, FileNotFoundError) as exc:
        print(f"racestack launch: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for spec in processes:
            env = " ".join(f"{k}={v}" for k, v in sorted(spec.env.items()) if k not in os.environ)
            print(f"# {spec.name}\n{env} {subprocess.list2cmdline(spec.cmd)}".strip())
        return 0
    session = LaunchSession(processes)
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    session.start()
    print(f"[racestack launch] started {len(processes)} node(s): {', '.join(p.name for p in processes)}")
    code = 0
    deadline = None if args.duration is None else time.monotonic() + args.duration
    while not stop.is_set():
        dead = session.check()
        if any(n.spec.required for n in dead):
            code = 1
            break
        if not session.running():
            code = 1 if session.failures else 0
            break
        if deadline is not None and time.monotonic() > deadline:
            break
        stop.wait(0.1)
    session.stop()
    print(f"[racestack launch] stopped ({'failure' if code else 'clean'})")
    return code
