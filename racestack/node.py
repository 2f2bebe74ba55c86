"""The base every racestack node shares: validated parameters, QoS presets, diagnostics, shutdown.

A node subclasses ``RacestackNode``, lists its ``Param`` specs, and wraps each frame in
``with self.frame(header.stamp):`` so processing time and input age land in /diagnostics. Bad input
goes through ``self.reject(reason, detail)``: counted per reason, logged rate-limited, frame dropped.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.callback_groups import CallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

from racestack.cdr import stamp_to_ns
from racestack.contexts import close_private_node
from racestack.errors import INTERRUPTED_EXIT, InputError, ParameterError, StartupError
from racestack.params import Param, validate
from racestack.pointcloud import SerializedCloud, cloud_from_cdr
from racestack.process import exit_if_stuck, leave, own_process
from racestack.stats import NodeMonitor, StampGuard, Throttle

COMMON_PARAMS: tuple[Param, ...] = (
    Param("diagnostics_period", 1.0, "Wall seconds between /diagnostics messages (also without /clock).", min=0.05,
          max=10.0),
    Param("warn_period", 5.0, "Seconds between repeated warnings of one kind.", min=0.0, max=3600.0),
    Param(
        "max_input_age",
        1.0,
        "Inputs older than this (s, node clock) are rejected as stale; 0 disables the check.",
        min=0.0,
    ),
    Param("stats_window", 500, "Frames in the rolling p50/p99 window.", min=10, max=100000),
)


def sensor_qos(depth: int = 1) -> QoSProfile:
    """Subscriptions to sensor streams: newest frame only, never wait for a late one."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def result_qos(depth: int = 5) -> QoSProfile:
    """Results between nodes and sensor publishers: reliable, so subscribers may choose either."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    """Rarely changing data (track geometry, camera info) that late joiners must still receive."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def take_all(subscription) -> list[tuple[Any, dict]]:
    """Every message that has arrived on ``subscription``, with its DDS message info, taken now.

    rclpy's executor takes one message per subscription per wake-up, so a node busy with one input
    for longer than another input's period falls behind on it: a callback of the slow input takes
    the other input's messages itself first, without a wake-up per message. Benchmarks read their
    outputs this way too (``Probe.poller``).
    """
    taken = []
    with subscription.handle:
        while (item := subscription.handle.take_message(subscription.msg_type, subscription.raw)) is not None:
            taken.append(item)
    return taken


class PolledGroup(CallbackGroup):
    """Subscriptions that no executor waits on or takes from: their node reads them with ``take_all``
    when it needs them. An input needed only when another one arrives (odometry for each sweep) then
    costs no executor wake-up per message: a quarter of a millisecond of each PPN frame.

    Their QoS events are not served either: with an event in its wait set, rmw_fastrtps wakes on
    every message of the subscription, and the executor spun at full speed on messages it may not
    take. A best-effort volatile subscription matches every publisher, so it has no such event to miss.
    """

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        return None


def create_polled_subscription(
    node: Node,
    msg_type,
    topic: str,
    qos_profile: QoSProfile,
    raw: bool = False,
    callback: Callable[[Any], None] | None = None,
):
    """A subscription of ``node`` that no executor serves: read by ``take_all``, or by ``spin_frames``
    with ``callback``. Best effort and volatile only, because its QoS events are not served either
    (see ``PolledGroup``): such a subscription matches every publisher, so it has no event to miss."""
    if (qos_profile.reliability, qos_profile.durability) != (ReliabilityPolicy.BEST_EFFORT, DurabilityPolicy.VOLATILE):
        raise ValueError(f"polled subscription to {topic}: best effort and volatile only")
    return node.create_subscription(
        msg_type, topic, callback or _never_called, qos_profile, callback_group=PolledGroup(), raw=raw
    )


def _never_called(_msg: Any) -> None:
    """The callback of a polled subscription, which no executor calls."""


class RacestackNode(Node):
    """rclpy node with declared+validated parameters, diagnostics and rate-limited rejections."""

    def __init__(self, name: str, params: Sequence[Param], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._specs = {p.name: p for p in (*COMMON_PARAMS, *params)}
        self.p = SimpleNamespace(**{spec.name: self._declare(spec) for spec in self._specs.values()})
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.monitor = NodeMonitor(window=self.p.stats_window)
        # frames may run in the main thread while the executor's thread reports (``spin_frames``)
        self._monitor_lock = threading.Lock()
        self.frame_input = None
        self._throttle = Throttle(self.p.warn_period)
        self.stamps = StampGuard(max_age_s=self.p.max_input_age)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", result_qos(10))
        # on the steady clock: with use_sim_time and no /clock yet (or a paused one) a node still says
        # how it is, and the launcher can tell it is alive (racestack.liveness)
        self._diag_timer = self.create_timer(self.p.diagnostics_period, self.publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._extra_diagnostics: list[Callable[[], dict[str, str]]] = []

    # -- parameters -------------------------------------------------------------------------

    def _declare(self, spec: Param) -> Any:
        descriptor = ParameterDescriptor(
            description=spec.description,
            read_only=spec.read_only,
            additional_constraints=spec.constraints_text(),
        )
        if spec.min is not None or spec.max is not None:
            if spec.kind is float:
                descriptor.floating_point_range = [
                    FloatingPointRange(
                        from_value=float(spec.min if spec.min is not None else -sys.float_info.max),
                        to_value=float(spec.max if spec.max is not None else sys.float_info.max),
                    )
                ]
            elif spec.kind is int:
                descriptor.integer_range = [
                    IntegerRange(
                        from_value=int(spec.min if spec.min is not None else -(2**63)),
                        to_value=int(spec.max if spec.max is not None else 2**63 - 1),
                    )
                ]
        default: Any = spec.default
        if spec.kind is float:
            descriptor.dynamic_typing = True
        if isinstance(spec.default, list | tuple):
            descriptor.type = _ARRAY_TYPES.get(spec.item_type, ParameterType.PARAMETER_DOUBLE_ARRAY)
            default = list(spec.default) or None
        try:
            value = self.declare_parameter(spec.name, default, descriptor).value
        except Exception as exc:
            raise ParameterError(spec.name, str(exc)) from exc
        if value is None:
            value = list(spec.default)
        return validate(spec, list(value) if isinstance(value, list | tuple) else value)

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            if spec is None:
                continue
            try:
                value = validate(spec, parameter.value)
            except ParameterError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            setattr(self.p, spec.name, value)
        return SetParametersResult(successful=True)

    # -- bad input and diagnostics ------------------------------------------------------------

    def warn_limited(self, key: str, text: str) -> None:
        """A warning logged at most once per ``warn_period`` for ``key``."""
        allowed, suppressed = self._throttle.allow(key)
        if allowed:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            self.get_logger().warning(text + more)

    def reject(self, reason: str, detail: str, topic: str = "") -> None:
        """Drop a frame: count it under ``reason`` and warn (rate-limited)."""
        with self._monitor_lock:
            self.monitor.rejected[reason] += 1
        where = f" on {topic}" if topic else ""
        self.warn_limited(f"reject:{reason}", f"dropped input{where}: {reason}: {detail}")

    def reject_error(self, error: InputError, topic: str = "") -> None:
        self.reject(error.reason, error.detail, topic)

    def count(self, key: str, amount: int = 1) -> None:
        with self._monitor_lock:
            self.monitor.counters[key] += amount

    def create_subscription(self, msg_type, topic: str, callback, qos_profile, **kwargs):
        """A publisher whose QoS can never match (a best-effort one for a reliable subscription) is
        warned about and counted: otherwise the node would wait for its data in silence."""
        if "event_callbacks" not in kwargs:
            kwargs["event_callbacks"] = SubscriptionEventCallbacks(
                incompatible_qos=lambda event, name=topic: self._incompatible_qos(name, event))
        return super().create_subscription(msg_type, topic, callback, qos_profile, **kwargs)

    def create_cloud_subscription(
        self,
        topic: str,
        callback: Callable[[SerializedCloud], None],
        qos_profile: QoSProfile,
        frame_input: bool = False,
    ):
        """A PointCloud2 subscription that takes the bytes and hands ``callback`` the cloud read in place
        (``cloud_from_cdr``): rclpy's message object would copy the points once more (a 1.6 MB cloud:
        ~0.2 ms). Bytes that do not form a cloud are rejected as 'layout' and never reach ``callback``.

        ``frame_input``: the clouds drive this node's frames, taken in a loop of their own (``spin_frames``).
        """

        def on_bytes(data: bytes) -> None:
            try:
                cloud = cloud_from_cdr(data)
            except InputError as exc:
                self.reject_error(exc, topic)
                return
            callback(cloud)

        if not frame_input:
            return self.create_subscription(PointCloud2, topic, on_bytes, qos_profile, raw=True)
        self.frame_input = create_polled_subscription(
            self, PointCloud2, topic, qos_profile, raw=True, callback=on_bytes
        )
        return self.frame_input

    def _incompatible_qos(self, topic: str, event) -> None:
        self.count("incompatible_qos_publishers")
        policy = str(getattr(event.last_policy_kind, "name", event.last_policy_kind)).removeprefix("RMW_QOS_POLICY_")
        self.warn_limited(f"qos:{topic}", f"a publisher on {topic} offers QoS this subscription cannot take "
                                          f"({policy}); its messages are not received")

    def accept_stamp(self, stream: str, stamp: Time, on_time_jump: Callable[[], None] | None = None) -> bool:
        """True if the stamp is usable; rejects stale/out-of-order ones; resets state on a jump back."""
        now_ns = self.get_clock().now().nanoseconds
        stamp_ns = stamp_to_ns(stamp)
        verdict = self.stamps.check(stream, stamp_ns, now_ns)
        if verdict is None:
            return True
        if verdict == "time_jump":
            self.count("time_jumps")
            self.get_logger().info(f"time jumped back on {stream}: state reset")
            if on_time_jump is not None:
                on_time_jump()
            return True
        age_s = (now_ns - stamp_ns) / 1e9
        hint = " (is use_sim_time set for replayed data?)" if verdict == "stale" and age_s > 60 else ""
        self.reject(verdict, f"stamp {stamp_ns / 1e9:.3f} s, age {age_s:.3f} s{hint}", stream)
        return False

    @contextmanager
    def frame(self, stamp: Time | None = None) -> Iterator[None]:
        """Times the enclosed processing; records input age (clock now - stamp) when it ends."""
        start = time.perf_counter()
        yield
        elapsed_ms = (time.perf_counter() - start) * 1e3
        age_ns = None if stamp is None else self.get_clock().now().nanoseconds - stamp_to_ns(stamp)
        with self._monitor_lock:
            self.monitor.processing_ms.add(elapsed_ms)
            if age_ns is not None:
                self.monitor.input_age_ms.add(age_ns / 1e6)
            self.monitor.counters["frames"] += 1

    def add_diagnostics(self, source: Callable[[], dict[str, str]]) -> None:
        """Extra key/values for this node's diagnostic status (backend, model, fallbacks...)."""
        self._extra_diagnostics.append(source)

    def publish_diagnostics(self) -> None:
        with self._monitor_lock:
            values = self.monitor.report()
        values.update(self._matched_endpoints())
        for source in self._extra_diagnostics:
            values.update(source())
        rejected = int(values.get("rejected", "0"))
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if rejected else DiagnosticStatus.OK,
            name=self.get_fully_qualified_name(),
            hardware_id=os.uname().nodename,
            message=f"{values.get('frames', '0')} frames, {rejected} rejected",
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


    def _matched_endpoints(self) -> dict[str, str]:
        """Matched writers per input and readers per output: a link still being discovered shows as 0
        (the launcher waits for links, and an operator sees an input that receives from no one)."""
        values = {f"{MATCHED_PUBLISHERS}{s.topic_name}": str(s.get_publisher_count()) for s in self.subscriptions
                  if s.topic_name not in PLUMBING_TOPICS}
        values.update({f"{MATCHED_SUBSCRIBERS}{p.topic_name}": str(p.get_subscription_count()) for p in self.publishers
                       if p.topic_name not in PLUMBING_TOPICS})
        return values


MATCHED_PUBLISHERS = "matched_publishers."
MATCHED_SUBSCRIBERS = "matched_subscribers."
PLUMBING_TOPICS = frozenset({"/rosout", "/parameter_events", "/diagnostics"})

_ARRAY_TYPES = {
    float: ParameterType.PARAMETER_DOUBLE_ARRAY,
    int: ParameterType.PARAMETER_INTEGER_ARRAY,
    str: ParameterType.PARAMETER_STRING_ARRAY,
    bool: ParameterType.PARAMETER_BOOL_ARRAY,
}


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Spin one node until SIGINT/SIGTERM, then destroy it and its DDS participant.

    A start-up error is printed naming the culprit and returns 2 at once, the half-built node and its
    participant left to the process's exit (``node_main`` leaves with ``os._exit``): torn down, such a
    node twice died of SIGSEGV in CI (exit -11 instead of 2), once freed by the garbage collector and
    once destroyed as a node, both after the error was printed, and never in 240 tries here. A node
    that never ran has nothing to flush; its shared-memory segment is removed by the next launch
    (``racestack.shm``), as those of the ``racestack`` command, which never deletes its participant.
    """
    rclpy.init(args=sys.argv if args is None else args)
    node = None
    executor = SingleThreadedExecutor()
    half_built = False
    try:
        node = factory()
        executor.add_node(node)
        if getattr(node, "frame_input", None) is None:
            executor.spin()
        else:
            spin_frames(node, executor)
    except StartupError as exc:
        print(f"[racestack] start-up error: {exc}", file=sys.stderr, flush=True)
        half_built = node is None
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if node is None and not rclpy.ok():  # Ctrl-C shut the context down while the node was being made
            print("[racestack] interrupted during start-up", file=sys.stderr, flush=True)
            return INTERRUPTED_EXIT
        raise
    finally:
        if not half_built:
            _close(node, executor)
    return 0


FRAME_WAIT_NS = 100_000_000  # how soon the frame loop notices a shutdown


def spin_frames(node: RacestackNode, executor: SingleThreadedExecutor) -> None:
    """The node's frame input waited on alone and handled in this thread; rclpy's executor serves
    everything else (parameters, timers, other inputs) in a second one, until the context shuts down.

    The executor rebuilds its wait set from every entity of the node and dispatches through a task on
    each wake-up: 0.55-0.66 ms per 1.6 MB cloud, against 0.32-0.35 ms for this loop (taking the
    bytes included), measured here with a 22 ms callback at 53 Hz. The executor's callbacks run
    while a frame may be in progress: what they share with it goes through the node's monitor
    (locked) or must be locked by the node.
    """
    failures: list[BaseException] = []
    spinner = threading.Thread(target=_spin_recording, args=(executor, failures), name="executor", daemon=True)
    spinner.start()
    subscription, context = node.frame_input, node.context
    with context.handle, subscription.handle:
        # rclpy's own wait-set binding, the one its executor waits with
        wait_set = _rclpy.WaitSet(1, 0, 0, 0, 0, 0, context.handle)
        while context.ok() and not failures:
            wait_set.clear_entities()
            wait_set.add_subscription(subscription.handle)
            wait_set.wait(FRAME_WAIT_NS)
            if not wait_set.get_ready_entities("subscription"):
                continue
            item = subscription.handle.take_message(subscription.msg_type, subscription.raw)
            if item is not None:
                subscription.callback(item[0])
    if failures:
        raise failures[0]


def _spin_recording(executor: SingleThreadedExecutor, failures: list[BaseException]) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    except BaseException as exc:  # handed to the frame loop, which raises it in the main thread
        failures.append(exc)


def _close(node: Node | None, executor: SingleThreadedExecutor) -> None:
    """Destroy the node and the DDS participant (watched: see ``exit_if_stuck``); a participant
    whose deletion hangs in Fast DDS is left to the process's exit after 5 s."""
    exit_if_stuck()
    executor.shutdown()
    context = rclpy.get_default_context()
    if node is not None and not close_private_node(node, context):
        return
    rclpy.try_shutdown()
    gc.collect()  # a node whose constructor failed holds the participant: free it here, watched
    context.destroy()


def node_main(factory: Callable[[], Node]) -> Callable[[], None]:
    """A console-script entry point for a node class."""

    def main() -> None:
        own_process()
        # the interpreter's teardown of torch and ONNX Runtime made eight nodes stopping at once on
        # two cores outlast the launcher's grace
        leave(run_node(factory))

    return main
