"""``racestack replay``: a rosbag2 published again as recorded: same bytes, order, timing and QoS.

The stored CDR bytes are published as they are (rclpy publishes ``bytes`` without re-serializing),
each after a structural check against the installed type so a damaged message never reaches a
subscriber. Publishers offer the recorded QoS (reliability, durability: latched ``/map/*`` topics
stay latched). ``/clock`` follows the replayed messages (see ``racestack.bags.Timeline``) so nodes
run with ``use_sim_time``; a loop jumps the clock back once, before the first message of the new pass.

Python API: ``BagReplayer`` with ``messages()`` + ``publish(item)`` for step-wise use,
``step(trigger_topics)`` / ``publish_until(t)`` for lockstep evaluation, and ``play()`` for paced replay.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.duration import Duration
from rclpy.exceptions import NameValidationException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import QosDurability
from rosgraph_msgs.msg import Clock

from racestack.bag_qos import describe, qos_from_bag, same_transports_as_the_stack
from racestack.bags import TIMINGS, Bag, BagError, BagMessage, BagProblem, Timeline, offer_for_recorded
from racestack.cdr import cdr_problem, header_stamp_ns, message_class
from racestack.contexts import close_private_node, open_private_context
from racestack.process import exit_if_stuck
from racestack.publishing import publish_serialized

DEFAULT_CLOCK_HZ = 100.0
CLOCK_TOPIC = "/clock"
# A publisher counts a subscriber before that subscriber has matched the publisher in turn (under
# load, up to about a second later); a best-effort subscriber loses what comes in between.
MATCH_SETTLE_S = 1.0
BEST_EFFORT_DRAIN_S = 0.5
_STAMP_SEARCH = 1000


@dataclass(slots=True)
class ReplayItem:
    """A stored message on its way out: output topic (after remapping) and replay-clock time."""

    topic: str
    message: BagMessage
    time_ns: int
    stamp_ns: int | None


@dataclass
class ReplayStats:
    published: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    lateness_ms: list[float] = field(default_factory=list)
    passes: int = 0

    def __str__(self) -> str:
        lines = [f"published {sum(self.published.values())} messages in {self.passes} pass(es)"]
        lines += [f"  {topic}: {count}" for topic, count in sorted(self.published.items())]
        if self.lateness_ms:
            p50, p99 = np.percentile(self.lateness_ms, [50, 99])
            lines.append(f"  publish lateness vs schedule: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        lines += [f"  skipped ({reason}): {count}" for reason, count in sorted(self.skipped.items())]
        return "\n".join(lines)


@dataclass
class _Output:
    topic: str
    msg_class: type
    publisher: Any
    latched: bool


def parse_remaps(entries: Iterable[str]) -> dict[str, str]:
    """``['/a:=/b']`` -> ``{'/a': '/b'}``; ValueError naming a malformed entry."""
    remap = {}
    for entry in entries:
        source, sep, target = entry.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"remap '{entry}' is not of the form FROM:=TO")
        remap[source] = target
    return remap


class BagReplayer:
    """Publishes a bag's messages: paced (``play``) or driven by the caller (``publish``/``step``)."""

    def __init__(
        self,
        bag: Bag | str | Path,
        *,
        topics: Collection[str] | None = None,
        remap: dict[str, str] | None = None,
        start_offset_s: float = 0.0,
        clock: bool = True,
        timing: str = "stamp",
        node: Node | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if timing not in TIMINGS:
            raise ValueError(f"timing '{timing}' is not one of {', '.join(TIMINGS)}")
        self.log = log or (lambda text: print(f"[replay] {text}", file=sys.stderr, flush=True))
        self.problems: list[BagProblem] = []
        self._owns_bag = not isinstance(bag, Bag)
        self.bag = Bag(bag) if self._owns_bag else bag
        for problem in self.bag.problems:
            self._log_problem(problem)
        self.bag.on_problem = self._log_problem
        self.timing = timing
        self.stats = ReplayStats()
        self.context: Context | None = None
        if node is None:
            self.context = open_private_context()
            node = Node("racestack_replay", context=self.context)
        self.node = node
        self._clock_lock = threading.Lock()
        self._clock_ns: int | None = None
        self.clock_publisher = (
            node.create_publisher(
                Clock,
                CLOCK_TOPIC,
                QoSProfile(
                    history=HistoryPolicy.KEEP_LAST,
                    depth=10,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE,
                ),
            )
            if clock
            else None
        )
        self.outputs: dict[str, _Output] | None = None
        try:
            self.outputs = self._create_outputs(topics, remap or {})
            self._start_ns = self._first_receive_ns() + int(start_offset_s * 1e9) if start_offset_s > 0 else 0
        except BaseException:
            self.close()
            raise
        self._cursor: Iterator[ReplayItem] | None = None
        self._peeked: ReplayItem | None = None

    # -- set-up -----------------------------------------------------------------------------------

    def _log_problem(self, problem: BagProblem) -> None:
        self.problems.append(problem)
        self.log(f"problem: {problem}")

    def _create_outputs(self, topics: Collection[str] | None, remap: dict[str, str]) -> dict[str, _Output]:
        if topics is not None:
            absent = sorted(set(topics) - set(self.bag.topics))
            if absent:
                self.log(f"not in the bag, ignored: {', '.join(absent)}")
        outputs = {}
        for name, info in sorted(self.bag.topics.items()):
            if topics is not None and name not in topics:
                continue
            target = remap.get(name, name)
            if target == CLOCK_TOPIC and self.clock_publisher is not None:
                self.log(f"recorded {name} is not replayed: replay publishes /clock itself (see --no-clock)")
                continue
            try:
                msg_class = message_class(info.msgtype)
            except ValueError as exc:
                count = "?" if info.count is None else info.count
                self._log_problem(BagProblem(self.bag.path.name, f"topic {name}", f"{exc}: {count} messages skipped"))
                continue
            offer = offer_for_recorded(info.qos)
            qos = qos_from_bag(offer)
            publisher = self.node.create_publisher(msg_class, target, qos)
            self.log(f"{name} -> {target} ({info.msgtype}, {describe(qos)})")
            latched = offer.durability == QosDurability.TRANSIENT_LOCAL
            outputs[name] = _Output(target, msg_class, publisher, latched)
        return outputs

    def _first_receive_ns(self) -> int:
        for message in self.bag.messages(self.outputs):
            return message.time_ns
        return 0

    def _first_offset_ns(self) -> int | None:
        """receive - stamp of the first stamped message: where unstamped messages before it go."""
        if self.timing != "stamp":
            return None
        for index, message in enumerate(self.bag.messages(self.outputs, self._start_ns)):
            stamp = self._timing_stamp(message)
            if stamp is not None:
                return message.time_ns - stamp
            if index >= _STAMP_SEARCH:
                break
        return None

    def wait_for_subscribers(
        self, timeout_s: float = 10.0, topics: Collection[str] | None = None, count: int = 1
    ) -> bool:
        """True once each output topic and /clock (or each of ``topics``) has ``count`` subscribers."""
        outputs = [o.publisher for o in self.outputs.values() if topics is None or o.topic in topics]
        if self.clock_publisher is not None and (topics is None or CLOCK_TOPIC in topics):
            outputs.append(self.clock_publisher)
        deadline = time.monotonic() + timeout_s
        while True:
            ready = all(publisher.get_subscription_count() >= count for publisher in outputs)
            if ready or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if ready:
            time.sleep(MATCH_SETTLE_S)
        return ready

    # -- step-wise ---------------------------------------------------------------------------------

    def _timing_stamp(self, message: BagMessage) -> int | None:
        """The header stamp that places ``message`` on the timeline; none for latched topics.

        Latched data (a track map) is state, not a stream: it was stamped when first published,
        often long before the recorder joined, so it keeps its receive time.
        """
        output = self.outputs[message.topic]
        return None if output.latched else header_stamp_ns(message.data, output.msg_class)

    def messages(self) -> Iterator[ReplayItem]:
        """One pass over the selected messages in replay order, each with its replay-clock time."""
        timeline = Timeline(self.timing, self._first_offset_ns())
        for message in self.bag.messages(self.outputs, self._start_ns):
            output = self.outputs[message.topic]
            time_ns = timeline.time_of(message.time_ns, self._timing_stamp(message))
            yield ReplayItem(output.topic, message, time_ns, header_stamp_ns(message.data, output.msg_class))

    def publish_clock(self, time_ns: int, jump: bool = False) -> None:
        """Publishes /clock = ``time_ns`` unless that would go back in time (``jump`` allows it once)."""
        if self.clock_publisher is None:
            return
        with self._clock_lock:
            if not jump and self._clock_ns is not None and time_ns <= self._clock_ns:
                return
            self._clock_ns = time_ns
            stamp = Time(sec=time_ns // 1_000_000_000, nanosec=time_ns % 1_000_000_000)
            self.clock_publisher.publish(Clock(clock=stamp))

    def publish(self, item: ReplayItem) -> bool:
        """Advances /clock to the item's time and publishes its bytes; False if the bytes are malformed."""
        output = self.outputs[item.message.topic]
        problem = cdr_problem(item.message.data, output.msg_class)
        if problem is not None:
            self.stats.skipped["malformed"] += 1
            self._log_problem(
                BagProblem(
                    self.bag.path.name,
                    item.message.where,
                    f"malformed {item.message.msgtype} on {item.message.topic}: {problem}: skipped",
                )
            )
            return False
        self.publish_clock(item.time_ns)
        publish_serialized(output.publisher, item.message.data)
        self.stats.published[item.topic] += 1
        return True

    def _next(self) -> ReplayItem | None:
        if self._peeked is not None:
            item, self._peeked = self._peeked, None
            return item
        if self._cursor is None:
            self._cursor = self.messages()
        return next(self._cursor, None)

    def step(self, trigger_topics: Collection[str]) -> list[ReplayItem]:
        """Publishes up to and including the next message on one of ``trigger_topics`` (output names).

        For lockstep evaluation: publish a frame with everything before it, wait for the stack's
        answer, step again. An empty list means the bag is exhausted.
        """
        done: list[ReplayItem] = []
        while (item := self._next()) is not None:
            self.publish(item)
            done.append(item)
            if item.topic in trigger_topics:
                break
        return done

    def publish_until(self, time_ns: int) -> list[ReplayItem]:
        """Publishes every pending message with replay time <= ``time_ns``, without waiting."""
        done: list[ReplayItem] = []
        while (item := self._next()) is not None:
            if item.time_ns > time_ns:
                self._peeked = item
                break
            self.publish(item)
            done.append(item)
        return done

    def rewind(self) -> None:
        """The next ``step``/``publish_until`` starts again from the beginning."""
        self._cursor, self._peeked = None, None

    # -- paced ----------------------------------------------------------------------------------------

    def play(
        self,
        rate: float = 1.0,
        loop: bool = False,
        stop: threading.Event | None = None,
        clock_hz: float = DEFAULT_CLOCK_HZ,
    ) -> ReplayStats:
        """Publishes in real time (scaled by ``rate``) until the end, or forever with ``loop``."""
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        stop = stop or threading.Event()
        pace: dict[str, tuple] = {}
        done = threading.Event()
        ticker = None
        if self.clock_publisher is not None and clock_hz > 0:
            ticker = threading.Thread(target=self._tick, args=(pace, rate, clock_hz, done), daemon=True)
            ticker.start()
        try:
            while not stop.is_set():
                published, pause_s = self._play_pass(rate, stop, pace)
                self.stats.passes += 1
                if not loop or not published or stop.wait(pause_s):
                    break
        finally:
            done.set()
            if ticker is not None:
                ticker.join()
        return self.stats

    def _play_pass(self, rate: float, stop: threading.Event, pace: dict[str, tuple]) -> tuple[int, float]:
        """One paced pass; returns how many messages went out and the pause before a next pass.

        The pause is the pass's last message interval (at most 1 s): subscribers get the usual time
        for the last message before the clock jumps back.
        """
        start_wall = start_time = None
        published, times = 0, [0, 0]
        for item in self.messages():
            if start_wall is None:
                pace.pop("anchor", None)
                self.publish_clock(item.time_ns, jump=True)
                start_wall, start_time = time.monotonic(), item.time_ns
            pace["anchor"] = (start_wall, start_time, item.time_ns)
            target = start_wall + (item.time_ns - start_time) / 1e9 / rate
            if stop.wait(max(0.0, target - time.monotonic())):
                break
            self.stats.lateness_ms.append((time.monotonic() - target) * 1e3)
            published += self.publish(item)
            times = [times[1], item.time_ns]
        return published, min((times[1] - times[0]) / 1e9 / rate, 1.0)

    def _tick(self, pace: dict[str, tuple], rate: float, hz: float, done: threading.Event) -> None:
        """/clock between messages at ``hz``, never past the next message's time (that one sets it)."""
        while not done.wait(1.0 / hz):
            anchor = pace.get("anchor")
            if anchor is not None:
                wall, start, limit = anchor
                self.publish_clock(min(int(start + (time.monotonic() - wall) * rate * 1e9), limit))

    def wait_for_acknowledgements(self, timeout_s: float = 5.0) -> bool:
        """Waits until reliable subscribers have every message (so exiting right after loses none)."""
        deadline = time.monotonic() + timeout_s
        acked = True
        for output in self.outputs.values():
            left = max(deadline - time.monotonic(), 0.0)
            acked &= output.publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
        return acked

    def close(self) -> None:
        """Releases the publishers (and the node and context when the replayer made them)."""
        if self.context is not None:
            close_private_node(self.node, self.context)
            self.context = None
        elif self.outputs is not None:
            for publisher in [o.publisher for o in self.outputs.values()] + [self.clock_publisher]:
                if publisher is not None:
                    self.node.destroy_publisher(publisher)
        self.outputs = None
        if self._owns_bag:
            self.bag.close()

    def __enter__(self) -> BagReplayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- command line ---------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag folder (metadata.yaml + storage files) or one .mcap/.db3 file")
    parser.add_argument("-r", "--rate", type=float, default=1.0, help="speed factor (default 1)")
    parser.add_argument("-l", "--loop", action="store_true", help="start again at the end, until stopped")
    parser.add_argument("--start-offset", type=float, default=0.0, help="skip the first S seconds of the bag")
    parser.add_argument("--topics", nargs="+", help="replay only these (recorded) topics")
    parser.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="publish FROM on TO")
    parser.add_argument(
        "--clock",
        type=float,
        nargs="?",
        const=DEFAULT_CLOCK_HZ,
        default=DEFAULT_CLOCK_HZ,
        metavar="HZ",
        help=f"/clock rate between messages (default {DEFAULT_CLOCK_HZ:g} Hz; 0: only at each message)",
    )
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock (replay a recorded one)")
    parser.add_argument(
        "--timing",
        choices=TIMINGS,
        default="stamp",
        help="pace and /clock by header stamps where present (default) or by recorded receive times",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before the first message")
    parser.add_argument(
        "--wait-for-subscribers",
        type=float,
        nargs="?",
        const=10.0,
        default=0.0,
        metavar="S",
        help="wait up to S s (default 10) until every replayed topic and /clock has a subscriber",
    )


def run(args: argparse.Namespace) -> int:
    same_transports_as_the_stack()
    try:
        remap = parse_remaps(args.remap)
        replayer = BagReplayer(
            args.bag,
            topics=args.topics,
            remap=remap,
            start_offset_s=args.start_offset,
            clock=not args.no_clock,
            timing=args.timing,
        )
    except (BagError, ValueError, NameValidationException) as exc:
        print(f"racestack replay: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with replayer:
        if args.wait_for_subscribers > 0 and not replayer.wait_for_subscribers(args.wait_for_subscribers):
            replayer.log("not every topic has a subscriber yet; replaying anyway")
        if not stop.wait(args.delay):
            replayer.play(args.rate, args.loop, stop, args.clock)
        if not replayer.wait_for_acknowledgements():
            replayer.log("some reliable subscribers did not acknowledge every message")
        # best-effort subscribers acknowledge nothing, and the process ends without deleting its
        # participant (no flush): the last large sample needs time to leave (a relay test got 1 of 2)
        stop.wait(BEST_EFFORT_DRAIN_S)
        print(replayer.stats, flush=True)
        exit_if_stuck()  # closing the replayer deletes its participant
        if replayer.problems:
            print(f"{len(replayer.problems)} problem(s) in '{args.bag}':", flush=True)
            for problem in replayer.problems:
                print(f"  {problem}", flush=True)
            return 1
    return 0
