"""``racestack record``: topics to a rosbag2 (MCAP by default), the CDR bytes exactly as received.

Subscriptions are raw (nothing is deserialized or re-serialized) and ask for a QoS that every
current publisher can serve: reliable only when all publishers are reliable, transient local only
when all are (so latched topics such as ``/map/*`` arrive even if published before recording
started). The offered profiles go into the bag's metadata so replay can offer them again. Each
message is stored at its receive time (rmw reception stamp, or ``/clock`` with ``--use-sim-time``).

Python API: ``Recorder`` (start/stop, usable from the demo and evaluation) and ``record`` (blocking).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosbags.interfaces import QosDurability, QosReliability

from racestack.bag_qos import describe, qos_from_bag, qos_to_bag, same_transports_as_the_stack
from racestack.bags import STORAGES, BagError, BagWriter, request_for_offers
from racestack.cdr import message_class
from racestack.contexts import close_private_node, open_private_context

DEFAULT_EXCLUDE = r"^/(rosout|parameter_events)$"
DISCOVERY_PERIOD_S = 0.2
FLUSH_PERIOD_S = 1.0


@dataclass
class _Subscribed:
    msgtype: str
    subscription: Any
    reliable: bool
    latched: bool
    publishers: set[bytes] = field(default_factory=set)


@dataclass
class RecordSummary:
    path: Path
    counts: dict[str, int]
    duration_s: float

    def __str__(self) -> str:
        lines = [f"bag '{self.path}': {sum(self.counts.values())} messages in {self.duration_s:.1f} s"]
        lines += [f"  {topic}: {count}" for topic, count in sorted(self.counts.items())]
        return "\n".join(lines)


class Recorder:
    """Records topics in a background thread (own rclpy context) until ``stop()``."""

    def __init__(
        self,
        output: str | Path,
        topics: Iterable[str] = (),
        all_topics: bool = False,
        storage: str = "mcap",
        exclude: str = DEFAULT_EXCLUDE,
        use_sim_time: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.topics = {t if t.startswith("/") else "/" + t for t in topics}
        if not self.topics and not all_topics:
            raise ValueError("name topics to record or ask for all of them")
        self.all_topics = all_topics
        self.exclude = re.compile(exclude) if exclude else None
        self.use_sim_time = use_sim_time
        self.log = log or (lambda text: print(f"[record] {text}", file=sys.stderr, flush=True))
        self.path = Path(output)
        if self.path.exists():
            raise BagError(f"cannot write bag '{self.path}': it exists already")
        self.storage = storage
        self.writer: BagWriter | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._subscribed: dict[str, _Subscribed] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self.context = open_private_context()
        self.node = Node(
            "racestack_recorder",
            context=self.context,
            parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)],
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.node.create_timer(DISCOVERY_PERIOD_S, self._discover, clock=steady)
        self.node.create_timer(FLUSH_PERIOD_S, lambda: self.writer.flush(), clock=steady)

    # -- topics -----------------------------------------------------------------------------------

    def _wanted(self, topic: str) -> bool:
        if topic in self.topics:
            return True
        return self.all_topics and not (self.exclude and self.exclude.search(topic))

    def _discover(self) -> None:
        for topic, types in self.node.get_topic_names_and_types():
            if not self._wanted(topic):
                continue
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            if topic in self._subscribed:
                self._follow_publishers(topic, publishers)
            else:
                self._subscribe(topic, types, publishers)

    def _subscribe(self, topic: str, types: list[str], publishers: list) -> None:
        msgtype = types[0]
        if len(types) > 1:
            self.log(f"{topic} carries several types {types}: recording {msgtype} only")
        publishers = [p for p in publishers if p.topic_type == msgtype]
        offers = [qos_to_bag(p.qos_profile) for p in publishers]
        type_hash = next((str(p.topic_type_hash) for p in publishers), "")
        request = request_for_offers(offers)
        entry = _Subscribed(
            msgtype,
            None,
            request.reliability == QosReliability.RELIABLE,
            request.durability == QosDurability.TRANSIENT_LOCAL,
            {bytes(p.endpoint_gid) for p in publishers},
        )
        self._subscribed[topic] = entry
        try:
            msg_class = message_class(msgtype)
            self.writer.add_topic(topic, msgtype, offers, type_hash)
        except Exception as exc:
            self.log(f"{topic}: cannot record type {msgtype} ({exc})")
            return
        entry.subscription = self._create_subscription(topic, msg_class, request)

    def _create_subscription(self, topic: str, msg_class: type, request) -> Any:
        profile = qos_from_bag(request)
        self.log(f"recording {topic} ({self._subscribed[topic].msgtype}, {describe(profile)})")
        return self.node.create_subscription(
            msg_class, topic, lambda data, info: self._on_message(topic, data, info), profile, raw=True
        )

    def _follow_publishers(self, topic: str, publishers: list) -> None:
        """A publisher that joined later: store its profile; relax our request if it cannot serve it."""
        entry = self._subscribed[topic]
        publishers = [p for p in publishers if p.topic_type == entry.msgtype]
        fresh = [p for p in publishers if bytes(p.endpoint_gid) not in entry.publishers]
        if entry.subscription is None or not fresh:
            return
        for publisher in fresh:
            entry.publishers.add(bytes(publisher.endpoint_gid))
            self.writer.add_offered_qos(topic, qos_to_bag(publisher.qos_profile))
        request = request_for_offers([qos_to_bag(p.qos_profile) for p in publishers])
        reliable = request.reliability == QosReliability.RELIABLE
        latched = request.durability == QosDurability.TRANSIENT_LOCAL
        if (entry.reliable and not reliable) or (entry.latched and not latched):
            self.log(f"{topic}: a new publisher offers less, subscribing again to match it")
            self.node.destroy_subscription(entry.subscription)
            entry.reliable, entry.latched = reliable, latched
            entry.subscription = self._create_subscription(topic, message_class(entry.msgtype), request)

    def _on_message(self, topic: str, data: bytes, info: dict) -> None:
        if self.use_sim_time:
            stamp = self.node.get_clock().now().nanoseconds
        else:
            stamp = int(info.get("received_timestamp") or time.time_ns())
        self.writer.write(topic, stamp, data)

    # -- running ----------------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.writer.counts) if self.writer is not None else {}

    def subscribed(self) -> set[str]:
        return {topic for topic, entry in self._subscribed.items() if entry.subscription is not None}

    def matched_publishers(self) -> dict[str, int]:
        """Publishers each recording subscription has matched, on the subscription's side: what a
        publisher sends before this side has matched it is not recorded."""
        return {
            topic: entry.subscription.get_publisher_count()
            for topic, entry in list(self._subscribed.items())
            if entry.subscription is not None
        }

    def _run(self) -> None:
        """The recording thread: the bag is opened, written and closed here (sqlite3 needs one thread)."""
        try:
            self.writer = BagWriter(self.path, self.storage, custom_data={"recorder": "racestack record"})
        except BaseException as exc:
            self._error = exc
            return
        finally:
            self._ready.set()
        try:
            while not self._stop.is_set() and self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
            if self.context.ok():
                self._drain()
        except ExternalShutdownException:
            pass
        finally:
            self.writer.close()

    def start(self) -> Recorder:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="racestack-recorder", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self.stop()
            raise BagError(str(self._error)) from self._error
        return self

    def wait_for_topics(self, topics: Iterable[str], timeout_s: float = 10.0) -> bool:
        """True once every topic in ``topics`` is subscribed."""
        wanted = set(topics)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if wanted <= self.subscribed():
                return True
            time.sleep(0.05)
        return wanted <= self.subscribed()

    def _drain(self, quiet_s: float = 0.2, limit_s: float = 2.0) -> None:
        """Take what is already queued in the subscriptions before closing."""
        deadline = time.monotonic() + limit_s
        last, quiet_since = sum(self.counts.values()), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
            self.executor.spin_once(timeout_sec=0.02)
            total = sum(self.counts.values())
            if total != last:
                last, quiet_since = total, time.monotonic()


    def stop(self) -> RecordSummary:
        """Stops recording and closes the bag (metadata.yaml written). Safe to call twice."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            close_private_node(self.node, self.context, self.executor)
        return RecordSummary(self.path, self.counts, time.monotonic() - self._started)

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def record(
    output: str | Path,
    topics: Iterable[str] = (),
    all_topics: bool = False,
    storage: str = "mcap",
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    **kwargs: Any,
) -> RecordSummary:
    """Records until ``duration_s`` passed or ``stop`` is set; returns what was written."""
    stop = stop or threading.Event()
    recorder = Recorder(output, topics, all_topics, storage, **kwargs).start()
    try:
        stop.wait(duration_s)
    finally:
        summary = recorder.stop()
    return summary


# -- command line ---------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="*", help="topics to record")
    parser.add_argument("-a", "--all", action="store_true", help="record every topic, also ones appearing later")
    parser.add_argument("-o", "--output", help="bag folder to create (default rosbag2_<date>-<time>)")
    parser.add_argument("-s", "--storage", choices=STORAGES, default="mcap", help="storage format (default mcap)")
    parser.add_argument("-d", "--duration", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--exclude",
        default=DEFAULT_EXCLUDE,
        help=f"regular expression of topics --all leaves out (default {DEFAULT_EXCLUDE!r})",
    )
    parser.add_argument("--use-sim-time", action="store_true", help="stamp messages with /clock time")


def run(args: argparse.Namespace) -> int:
    if not args.topics and not args.all:
        print("racestack record: name topics or use --all", file=sys.stderr)
        return 2
    same_transports_as_the_stack()
    output = args.output or datetime.now().strftime("rosbag2_%Y_%m_%d-%H_%M_%S")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        summary = record(
            output,
            args.topics,
            args.all,
            args.storage,
            args.duration,
            stop,
            exclude=args.exclude,
            use_sim_time=args.use_sim_time,
        )
    except (BagError, ValueError) as exc:
        print(f"racestack record: {exc}", file=sys.stderr)
        return 2
    print(summary, flush=True)
    return 0
