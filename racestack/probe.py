"""A background rclpy node for tools and tests: publish inputs, collect outputs, wait for conditions.

Used by the tests (the stack runs in other processes), the benchmarks and the evaluation tools.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile

from racestack.contexts import close_private_node, open_private_context
from racestack.node import create_polled_subscription, result_qos, sensor_qos, take_all


@dataclass
class Received:
    """A message and the wall/monotonic time it arrived."""

    msg: Any
    wall_ns: int
    mono_ns: int = 0


@dataclass
class Collector:
    items: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    keep: int = 0

    def add(self, msg: Any) -> None:
        item = Received(msg=msg, wall_ns=time.time_ns(), mono_ns=time.monotonic_ns())
        with self.lock:
            self.items.append(item)
            if self.keep and len(self.items) > self.keep:
                del self.items[0]

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.items)

    def messages(self) -> list[Any]:
        return [r.msg for r in self.snapshot()]


# Each wait that times out costs rclpy's executor ~0.4 ms: at 0.05 s that was 0.8 % of a core, taken
# from the nodes a benchmark measures on two cores. ``close`` wakes the wait instead.
SPIN_PERIOD_S = 0.5
CLOSE_JOIN_S = 5.0


class Probe:
    """An rclpy node spinning in its own thread, in a context of its own or the process's shared one
    (``racestack.contexts.share_one_context``)."""

    def __init__(self, name: str = "racestack_probe", parameters: list | None = None) -> None:
        self.context = open_private_context(signal_handlers=True)
        self.node = Node(name, context=self.context, parameter_overrides=parameters or [])
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._publishers: dict[str, Any] = {}
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        """Bounded waits (``close`` also wakes them), not ``executor.spin()``: rclpy's
        ``Executor.shutdown`` can destroy the guard condition before a spinning thread enters its
        wait, which then never wakes; destroying the node under that wait blocks for ever with the
        GIL held (a whole test run hung on it)."""
        try:
            while not self._closing.is_set() and self.context.ok():
                self.executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        except Exception:
            if self.context.ok() and not self._closing.is_set():
                raise

    def publisher(self, msg_type: type, topic: str, qos: QoSProfile | None = None):
        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(msg_type, topic, qos or result_qos(10))
        return self._publishers[topic]

    def publish(self, topic: str, msg: Any, qos: QoSProfile | None = None) -> None:
        self.publisher(type(msg), topic, qos).publish(msg)

    def collect(
        self,
        msg_type: type,
        topic: str,
        qos: QoSProfile | None = None,
        keep: int = 0,
        callback: Callable[[Any], None] | None = None,
        raw: bool = False,
        info: bool = False,
    ) -> Collector:
        """``raw``: collect the serialized bytes (no deserialization: timing large outputs);
        ``info``: ``callback`` also gets the DDS message info (source and received timestamps)."""
        collector = Collector(keep=keep)

        def on_msg(msg: Any, message_info: dict) -> None:
            collector.add(msg)
            if callback is not None and info:
                callback(msg, message_info)
            elif callback is not None:
                callback(msg)

        self.node.create_subscription(msg_type, topic, on_msg, qos or result_qos(10), raw=raw)
        return collector

    def poller(
        self, msg_type: type, topic: str, qos: QoSProfile | None = None
    ) -> Callable[[], list[tuple[bytes, int]]]:
        """A reader that no executor serves: the returned call takes what has arrived, as (serialized
        bytes, DDS reception time in ns since the epoch).

        For a benchmark's replaying process on a small machine: taking in its own loop spares the
        executor's wake-up per message (a third of that process's CPU), and the reception time is
        the transport's, not the moment a Python thread got to the message.
        """
        subscription = create_polled_subscription(self.node, msg_type, topic, qos or sensor_qos(10), raw=True)

        def take() -> list[tuple[bytes, int]]:
            return [(data, info["received_timestamp"]) for data, info in take_all(subscription)]

        return take

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll_s)
        return predicate()

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout_s: float = 10.0) -> bool:
        return self.wait_for(lambda: self.node.count_subscribers(topic) >= count, timeout_s)

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def close(self) -> None:
        self._closing.set()
        self.executor.wake()
        self._thread.join(timeout=CLOSE_JOIN_S)
        if self._thread.is_alive():  # a callback that does not return: never destroy the node under it
            print(
                f"racestack: probe '{self.node.get_name()}' still in a callback after {CLOSE_JOIN_S:.0f} s; "
                "left to the process's exit",
                file=sys.stderr,
                flush=True,
            )
            return
        close_private_node(self.node, self.context, self.executor)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
