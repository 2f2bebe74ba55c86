"""Running the stack for evaluation: on a bag (lockstep or real time) or closed loop in the simulator.

Both start the graph through the real launcher, record what the enabled slots publish (plus
/diagnostics) into a bag, and time each frame from the moment its input was published to the
moment the answer (the last enabled slot's output with the same header stamp) arrived.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from rosgraph_msgs.msg import Clock

from racestack.bag_record import Recorder
from racestack.bag_replay import BagReplayer, ReplayItem
from racestack.bags import Bag, require_topics
from racestack.cdr import message_class
from racestack.graph import Graph, build_processes, load_graph_file, parse_overrides, resolve_graph
from racestack.launcher import LaunchSession
from racestack.liveness import LINK_TIMEOUT_S, Heartbeats, ensure_live, ready_or_restarted
from racestack.networks import prepare_onnx_files
from racestack.node import result_qos, stamp_to_ns
from racestack.probe import Probe

SENSOR_TRIGGER = "/sensing/lidar/points"
CAMERA_TOPIC = "/sensing/camera/image_raw"
STATE_TOPICS = ("/localization/odometry", "/sensing/camera/camera_info")
STARTUP_TIMEOUT_S = 180.0
STALL_TIMEOUT_S = 90.0
MODES = ("lockstep", "realtime")


class EvaluationError(RuntimeError):
    """A run that cannot be done (missing topic, node died at start-up…); the message says which."""


@dataclass
class StackOptions:
    """Which graph to run and how it is edited (the ``racestack launch`` options)."""

    graph: str = "default"
    swap: list[str] = field(default_factory=list)
    set_: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)
    transport: str = ""

    def resolved(self, extra_disable: tuple[str, ...] = (), extra_set: tuple[str, ...] = ()) -> Graph:
        swaps, sets = parse_overrides(self.swap, [*self.set_, *extra_set])
        return resolve_graph(load_graph_file(self.graph), swaps, sets, {*self.disable, *extra_disable})

    def processes(self, run_dir: Path, extra_disable: tuple[str, ...] = (), extra_set: tuple[str, ...] = ()):
        return build_processes(
            self.graph, run_dir, self.swap, [*self.set_, *extra_set], [*self.disable, *extra_disable], self.transport
        )


@dataclass
class RunResult:
    output_bag: Path
    mode: str
    trigger: str
    answer: str
    published: dict[int, int] = field(default_factory=dict)
    answered: dict[int, int] = field(default_factory=dict)
    timeouts: int = 0
    resent: int = 0
    warmup: int = 0  # real time: frames answered one at a time before the clock started, not scored
    wall_s: float = 0.0
    choices: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def latencies_ms(self) -> list[float]:
        return [(self.answered[s] - t) / 1e6 for s, t in self.published.items() if s in self.answered]

    def dropped(self) -> int:
        return sum(1 for s in self.published if s not in self.answered)


def pick_trigger_and_answer(graph: Graph, inputs: list[str], trigger: str = "", answer: str = "") -> tuple[str, str]:
    """The frame topic that paces a run and the output that answers it."""
    if not trigger:
        frames = [t for t in inputs if t not in STATE_TOPICS and not t.startswith("/map/")]
        trigger = SENSOR_TRIGGER if SENSOR_TRIGGER in inputs else (frames[0] if frames else "")
    if not answer:
        slots = [s for s in graph.enabled_slots() if graph.contracts.get(s) and graph.contracts[s].outputs]
        answer = graph.contracts[slots[-1]].outputs[0] if slots else ""
    if not trigger or not answer:
        raise EvaluationError("cannot tell which topic paces the run and which answers it: pass --trigger/--answer")
    return trigger, answer


class _Answers:
    """Wall-clock arrival of each answer stamp, seen by the evaluator's own node."""

    def __init__(
        self, probe: Probe, msg_type: type, topic: str, depth: int = 50, clock: str = "received_timestamp"
    ) -> None:
        self.times: dict[int, int] = {}
        self.event = threading.Event()
        self.clock = clock
        probe.collect(msg_type, topic, qos=result_qos(depth), keep=1, callback=self._on, info=True)

    def _on(self, msg, info: dict) -> None:
        # DDS's own times (the recorder's too): the Python callback can run well after arrival,
        # and a 1.6 MB sweep timed so came in after the stack's first outputs (-30 ms latencies)
        stamp = stamp_to_ns(msg.header.stamp)
        self.times.setdefault(stamp, int(info.get(self.clock) or time.time_ns()))
        self.event.set()

    def wait(self, stamp: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while stamp not in self.times:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.event.clear()
            self.event.wait(min(left, 0.05))
        return True


# per-frame outputs of the shipped slots (object tables are PointCloud2, the default for others)
KNOWN_TYPES = {
    "/planning/trajectory": "nav_msgs/msg/Path",
    "/control/command": "sensor_msgs/msg/JointState",
    "/perception/bev/segmentation": "nav_msgs/msg/OccupancyGrid",
    "/perception/bev/reconstruction": "sensor_msgs/msg/Image",
    "/planning/risk_map": "sensor_msgs/msg/Image",
    "/perception/objects/detected": "sensor_msgs/msg/PointCloud2",
    "/perception/objects/tracked": "sensor_msgs/msg/PointCloud2",
}


FIRST_ANSWER_TIMEOUT_S = 20.0
WARMUP_FRAMES = 10  # real time: 1 s at 10 Hz
SIMULATOR_LINK_TIMEOUT_S = 8.0
LOCKSTEP_SETTLE_S = 0.03  # idle nodes take a best-effort message within a few ms on one host


def _answer_type(topic: str) -> type:
    return message_class(KNOWN_TYPES.get(topic, "sensor_msgs/msg/PointCloud2"))


def _wait_ready(session: LaunchSession, ready: Callable[[], bool], what: str | Callable[[], str], timeout_s: float,
                late: Callable[[], list[str]] | None = None) -> None:
    """Until ``ready()``; with ``late``, the nodes it names are restarted once before giving up."""
    def detail() -> str:
        return what() if callable(what) else what

    if not ready_or_restarted(session, ready, timeout_s, late or list, partial(_no_required_death, session), detail):
        raise EvaluationError(f"the stack was not ready after {timeout_s:.0f} s ({detail()})")


def _unrecorded(recorder: Recorder, topics: Collection[str]) -> list[str]:
    """The topics the recorder has not subscribed to yet (their publishers are not discovered)."""
    return sorted(set(topics) - recorder.subscribed())


def _publishers_of(graph: Graph, topics: Collection[str]) -> list[str]:
    return _nodes_on(graph, topics, "outputs")


def _subscribers_of(graph: Graph, topics: Collection[str]) -> list[str]:
    return _nodes_on(graph, topics, "inputs")


def _nodes_on(graph: Graph, topics: Collection[str], side: str) -> list[str]:
    """The nodes whose slot's ``side`` (inputs or outputs) holds any of ``topics``."""
    return [n.name for n in graph.nodes if set(getattr(graph.contracts[n.slot], side)) & set(topics)]


class Progress:
    """A progress bar on a terminal; one line per 10 % otherwise (logs stay short)."""

    def __init__(self, total: float, width: int = 30) -> None:
        self.total, self.width = max(total, 1e-9), width
        self.tty = sys.stderr.isatty()
        self._shown = -1

    def update(self, done: float, label: str) -> None:
        fraction = min(max(done / self.total, 0.0), 1.0)
        step = int(fraction * (100 if self.tty else 10))
        if step == self._shown:
            return
        self._shown = step
        filled = int(self.width * fraction)
        bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {label}"
        sys.stderr.write(f"\r{bar}" if self.tty else f"{bar}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _log_to(path: Path) -> Callable[[str], None]:
    """Node output goes to a file next to the report (the terminal keeps the progress bar)."""
    handle = open(path, "a", buffering=1)  # noqa: SIM115 - closed by the interpreter at exit
    return lambda line: handle.write(line + "\n")


def run_on_bag(
    bag_path: str | Path,
    options: StackOptions,
    out_dir: str | Path,
    mode: str = "lockstep",
    trigger: str = "",
    answer: str = "",
    rate: float = 1.0,
    timeout_s: float = 5.0,
    progress: bool = True,
    warmup_frames: int = WARMUP_FRAMES,
) -> RunResult:
    """Replays the inputs the enabled slots need into the stack and records what it publishes.

    In real time the first ``warmup_frames`` frames are each answered before the next is sent, and
    the clock starts after them: a car's stack has run for a while before the drive that is timed,
    and cold first cycles (sessions, caches, first solves) backed up the next frames by 300 ms."""
    if mode not in MODES:
        raise EvaluationError(f"mode '{mode}' is not one of {', '.join(MODES)}")
    graph = options.resolved(extra_disable=("simulator",))
    inputs = graph.external_inputs()
    with Bag(bag_path) as bag:
        require_topics(bag, inputs)
        trigger, answer = pick_trigger_and_answer(graph, inputs, trigger, answer)
        frames = bag.topics[trigger].count or 0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = RunResult(output_bag=out_dir / "stack_outputs", mode=mode, trigger=trigger, answer=answer,
                       choices=graph.choices)
    run_dir = Path(tempfile.mkdtemp(prefix="racestack-eval-"))
    processes = options.processes(run_dir, extra_disable=("simulator",))
    node_log = _log_to(out_dir / "nodes.log")
    prepare_onnx_files(node_log)
    session = LaunchSession(processes, echo=node_log)
    recorder = Recorder(result.output_bag, topics=[*graph.outputs(), "/diagnostics"], log=lambda text: None)
    replayer = BagReplayer(bag_path, topics=inputs, log=lambda text: None)
    probe = Probe("racestack_evaluator")
    heartbeats = Heartbeats(probe)
    answers = _Answers(probe, _answer_type(answer), answer)
    # lockstep also waits for the trigger's direct consumers (a net that dropped a frame while the
    # answer came from a faster branch would make two runs of one bag differ)
    waited = [answer, *_frame_outputs(graph, trigger, answer)]
    consumers = [_Answers(probe, _answer_type(t), t) for t in waited[1:]]
    start = time.monotonic()
    try:
        session.start()
        recorder.start()
        _wait_ready(session, lambda: not _unmatched(replayer, graph),
                    lambda: f"not every reader matched yet on {_unmatched(replayer, graph)}", STARTUP_TIMEOUT_S,
                    lambda: _subscribers_of(graph, _unmatched(replayer, graph)))
        unrecorded = partial(_unrecorded, recorder, graph.outputs())

        def unseen() -> list[str]:
            return [t for t in waited if not probe.node.count_publishers(t)]

        _wait_ready(session, lambda: not unrecorded(),
                    lambda: f"not recording yet: {unrecorded()}", 60.0, lambda: _publishers_of(graph, unrecorded()))
        _wait_ready(session, lambda: not unseen(), lambda: f"no publisher seen yet on {unseen()}", 60.0,
                    lambda: _publishers_of(graph, unseen()))
        _ensure_live(session, heartbeats, session.running(), replayer)
        time.sleep(1.0)
        _replay(replayer, session, [answers, *consumers], result, mode, rate, timeout_s,
                Progress(frames) if progress else None, warmup_frames if mode == "realtime" else 0)
        time.sleep(1.0)
    finally:
        result.wall_s = time.monotonic() - start
        result.answered = dict(answers.times)
        recorder.stop()
        session.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        result.failures = list(session.failures)
        replayer.close()
        probe.close()
    return result


def _no_required_death(session: LaunchSession) -> bool:
    if any(n.spec.required for n in session.check()):
        raise EvaluationError("a node died during start-up:\n" + "\n".join(session.failures))
    return True


def _ensure_live(session: LaunchSession, heartbeats: Heartbeats, restartable: Collection[str],
                 replayer: BagReplayer | None = None, link_timeout_s: float = LINK_TIMEOUT_S) -> None:
    """Every node heard from and every link (also from the replayer) matched on both sides before the
    first frame: its results are otherwise lost to a reader still being discovered, and lockstep waits
    for them in vain (``racestack.liveness``)."""
    problem = ensure_live(session, heartbeats, restartable, lambda: _replayed(replayer) if replayer else {},
                          link_timeout_s=link_timeout_s, alive=partial(_no_required_death, session))
    if problem:
        raise EvaluationError(problem)


def _replayed(replayer: BagReplayer) -> dict[str, int]:
    """Matched readers of each topic the replayer publishes."""
    counts = {o.topic: o.publisher.get_subscription_count() for o in replayer.outputs.values()}
    if replayer.clock_publisher is not None:
        counts["/clock"] = replayer.clock_publisher.get_subscription_count()
    return counts


def _unmatched(replayer: BagReplayer, graph: Graph) -> list[str]:
    """Replayed topics without a subscriber per slot that reads them: a sweep sent while one of them
    is still matching is lost to it (best effort)."""
    return sorted(o.topic for o in replayer.outputs.values()
                  if o.publisher.get_subscription_count() < max(1, _consumers(graph, o.topic)))


def _frame_outputs(graph: Graph, trigger: str, answer: str) -> list[str]:
    """Per-frame outputs of the slots that take the trigger itself, stamped with its stamp (answer excluded)."""
    contracts = [graph.contracts.get(s) for s in graph.enabled_slots()]
    outputs = {t for c in contracts if c and trigger in c.inputs for t in c.outputs}
    return sorted(t for t in outputs - {answer} if t in KNOWN_TYPES)


def _state_first(
    items: Iterable[ReplayItem], trigger: str, latched: set[str], lead_s: float = 1.0
) -> Iterator[ReplayItem]:
    """Latched state recorded before the second frame (the track map) goes out first, ``lead_s``
    before the first message: a car has its map before it drives, and a replay that sent it 15 ms
    before the first sweep dropped the first frames' plans while the nodes built their tracks."""
    head: list[ReplayItem] = []
    frames = 0
    for item in items:
        frames += item.topic == trigger
        if frames < 2:
            head.append(item)
            continue
        if head:
            start = head[0].time_ns - round(lead_s * 1e9)
            yield from (replace(i, time_ns=start) for i in head if i.topic in latched)
            yield from (i for i in head if i.topic not in latched)
            head = []
        yield item
    yield from sorted(head, key=lambda i: i.topic not in latched)


def _frame_complete_first(items: Iterable[ReplayItem], trigger: str) -> Iterator[ReplayItem]:
    """Lockstep order: a trigger waits for the messages recorded just after it that belong to its frame
    (stamped no later than it, e.g. the pose at the sweep's stamp), so the stack always sees them first."""
    held: ReplayItem | None = None
    for item in items:
        if held is not None and item.topic != trigger and item.stamp_ns is not None and item.stamp_ns <= held.stamp_ns:
            yield item
            continue
        if held is not None:
            yield held
            held = None
        if item.topic == trigger and item.stamp_ns is not None:
            held = item
        else:
            yield item
    if held is not None:
        yield held


def _answered(waits: list[_Answers], stamp_ns: int, timeout_s: float) -> bool:
    """True once every waited topic has answered the frame stamped ``stamp_ns``, within ``timeout_s`` in all."""
    deadline = time.monotonic() + timeout_s
    return all([w.wait(stamp_ns, deadline - time.monotonic()) for w in waits])


def _replay(replayer, session, waits: list[_Answers], result: RunResult, mode: str, rate: float, timeout_s: float,
            progress, warmup: int = 0):
    wall_start, first = time.monotonic(), None
    latched = {o.topic for o in replayer.outputs.values() if o.latched}
    items = _state_first(replayer.messages(), result.trigger, latched)
    for item in _frame_complete_first(items, result.trigger) if mode == "lockstep" else items:
        if mode == "realtime" and result.warmup >= warmup:
            first = item.time_ns if first is None else first
            delay = wall_start + (item.time_ns - first) / 1e9 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        elif item.topic == result.trigger:
            # lockstep: what came before the trigger in the bag (odometry, maps) is delivered before it,
            # so a node never sees this frame with or without its pose depending on DDS timing:
            # reliable topics are acknowledged, best-effort ones (sensor QoS) get a settle time
            replayer.wait_for_acknowledgements(1.0)
            time.sleep(LOCKSTEP_SETTLE_S)
        replayer.publish(item)
        if item.topic != result.trigger or item.stamp_ns is None:
            continue
        if result.warmup < warmup:
            result.warmup += 1
            _answered(waits, item.stamp_ns, max(timeout_s, FIRST_ANSWER_TIMEOUT_S))
            wall_start, first = time.monotonic(), None
            continue
        result.published[item.stamp_ns] = time.time_ns()
        # the stack's first inference is slow (sessions warm up, caches fill): as the simulator does
        wait_s = max(timeout_s, FIRST_ANSWER_TIMEOUT_S) if len(result.published) == 1 else timeout_s
        if mode == "lockstep" and not _answered(waits, item.stamp_ns, wait_s):
            # a best-effort sweep lost on its way is sent once more; a node that had it rejects the copy
            replayer.publish(item)
            result.resent += 1
            if not _answered(waits, item.stamp_ns, timeout_s):
                result.timeouts += 1
        if any(n.spec.required for n in session.check()):
            raise EvaluationError("a node died during the run:\n" + "\n".join(session.failures))
        if progress is not None:
            done = result.warmup + len(result.published)
            progress.update(done, f"{done}/{progress.total:.0f} frames ({mode})")
    if progress is not None:
        progress.close()


SIMULATOR_SETTINGS = (
    "simulator.clock_mode={clock}",
    "simulator.drive=command",
    "simulator.scenario={scenario}",
    "simulator.duration=-1.0",
)


def _consumers(graph, topic: str) -> int:
    """How many enabled slots of the stack read ``topic``."""
    slots = [s for s in graph.enabled_slots() if s != "simulator"]
    return sum(1 for s in slots if topic in getattr(graph.contracts.get(s), "inputs", ()))


def run_closed_loop(
    options: StackOptions,
    scenario: str,
    duration_s: float,
    out_dir: str | Path,
    clock: str = "lockstep",
    record_all: bool = True,
    progress: bool = True,
) -> RunResult:
    """The simulator drives the stack (and the stack the car) for ``duration_s`` of simulated time."""
    graph = options.resolved()
    if "simulator" not in graph.enabled_slots():
        raise EvaluationError("closed loop needs the simulator slot")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trigger, answer = pick_trigger_and_answer(graph, [SENSOR_TRIGGER])
    result = RunResult(output_bag=out_dir / "run", mode=f"closed loop ({clock})", trigger=trigger, answer=answer,
                       choices=graph.choices)
    settings = (*(s.format(clock=clock, scenario=scenario) for s in SIMULATOR_SETTINGS),
                f"simulator.lidar_subscribers={_consumers(graph, trigger) + 1}",  # + this evaluator's frame counter
                f"simulator.camera_subscribers={_consumers(graph, CAMERA_TOPIC)}")
    run_dir = Path(tempfile.mkdtemp(prefix="racestack-run-"))
    processes = options.processes(run_dir, extra_set=settings)
    node_log = _log_to(out_dir / "nodes.log")
    prepare_onnx_files(node_log)
    session = LaunchSession(processes, echo=node_log)
    topics = [*graph.outputs(), "/diagnostics"]
    recorder = Recorder(result.output_bag, topics=topics, all_topics=record_all, log=lambda text: None)
    probe = Probe("racestack_closed_loop")
    heartbeats = Heartbeats(probe)
    answers = _Answers(probe, _answer_type(answer), answer)
    frames = _Answers(probe, message_class("sensor_msgs/msg/PointCloud2"), trigger, depth=5, clock="source_timestamp")
    sim_time = [0.0]
    probe.collect(Clock, "/clock", keep=1, callback=lambda msg: sim_time.__setitem__(0, stamp_to_ns(msg.clock) / 1e9))
    start = time.monotonic()
    stack = [n.name for n in graph.nodes if n.slot != "simulator"]
    outputs = [t for s in graph.enabled_slots() if s != "simulator" for t in graph.contracts[s].outputs]
    try:
        session.start(only=stack)
        recorder.start()
        unrecorded = partial(_unrecorded, recorder, outputs)
        # half the start-up time, then the silent publishers are restarted once: an ablation suite
        # had 3 of 48 runs whose evaluator discovered none of a stack that had started normally
        _wait_ready(session, lambda: not unrecorded(),
                    lambda: f"outputs not advertised: {unrecorded()}", STARTUP_TIMEOUT_S / 2,
                    lambda: _publishers_of(graph, unrecorded()))
        _ensure_live(session, heartbeats, stack)
        session.start()
        # lockstep holds frame 0 (and /clock) until the simulator has matched the stack's readers
        simulator = [n.name for n in graph.nodes if n.slot == "simulator"]
        _wait_ready(session, lambda: sim_time[0] > 0.0, "no /clock from the simulator", STARTUP_TIMEOUT_S / 2,
                    lambda: simulator)
        # the simulator's links, checked while it runs (it drives on meanwhile): a short wait, and a
        # node that missed the simulator's discovery is restarted early in the run
        _ensure_live(session, heartbeats, stack, link_timeout_s=SIMULATOR_LINK_TIMEOUT_S)
        begin = sim_time[0]
        bar = Progress(duration_s) if progress else None
        last_time, last_change = sim_time[0], time.monotonic()
        while sim_time[0] - begin < duration_s:
            dead = session.check()
            if any(n.spec.required for n in dead):
                raise EvaluationError("a node died during the run:\n" + "\n".join(session.failures))
            if sim_time[0] != last_time:
                last_time, last_change = sim_time[0], time.monotonic()
            elif time.monotonic() - last_change > STALL_TIMEOUT_S:
                raise EvaluationError(
                    f"no progress: simulated time stuck at {last_time:.2f} s for {STALL_TIMEOUT_S:.0f} s "
                    f"(is {answer} answered for every LiDAR frame? see {out_dir / 'nodes.log'})"
                )
            if bar is not None:
                done = sim_time[0] - begin
                rate = done / max(time.monotonic() - start, 1e-3)
                bar.update(done, f"{done:5.1f}/{duration_s:.0f} s simulated ({rate:.2f}x real time)")
            time.sleep(0.2)
        if bar is not None:
            bar.close()
        time.sleep(0.5)
    finally:
        result.wall_s = time.monotonic() - start
        result.published = dict(frames.times)
        result.answered = dict(answers.times)
        recorder.stop()
        session.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        result.failures = list(session.failures)
        probe.close()
    return result
