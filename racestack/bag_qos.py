"""DDS settings of record and replay: QoS profiles rclpy <-> rosbag2 metadata, and the transports.

The policy decisions (request what every publisher can serve, offer what the recorded publishers
offered) live in ``racestack.bags`` without rclpy; this module only converts both ways.
"""

from __future__ import annotations

import os

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from racestack.bags import INFINITE
from racestack.graph import DEFAULT_ENVIRONMENT

_INFINITE_NS = 2**63 - 1


def _to_time(duration: Duration) -> QosTime:
    ns = duration.nanoseconds
    if ns >= _INFINITE_NS:
        return INFINITE
    return QosTime(ns // 1_000_000_000, ns % 1_000_000_000)


def _enum(kind, value: int, unknown):
    try:
        return kind(value)
    except ValueError:
        return unknown


def qos_to_bag(profile: QoSProfile) -> Qos:
    """A publisher's profile as discovered on the graph, in rosbag2 metadata form."""
    return Qos(
        _enum(QosHistory, int(profile.history), QosHistory.UNKNOWN),
        int(profile.depth),
        _enum(QosReliability, int(profile.reliability), QosReliability.UNKNOWN),
        _enum(QosDurability, int(profile.durability), QosDurability.UNKNOWN),
        _to_time(profile.deadline),
        _to_time(profile.lifespan),
        _enum(QosLiveliness, int(profile.liveliness), QosLiveliness.UNKNOWN),
        _to_time(profile.liveliness_lease_duration),
        bool(profile.avoid_ros_namespace_conventions),
    )


def qos_from_bag(qos: Qos) -> QoSProfile:
    """An rclpy profile with the history, reliability and durability of ``qos`` (others default)."""
    keep_all = qos.history == QosHistory.KEEP_ALL
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST,
        depth=max(int(qos.depth), 1),
        reliability=ReliabilityPolicy(qos.reliability.value),
        durability=DurabilityPolicy(qos.durability.value),
        liveliness=LivelinessPolicy.SYSTEM_DEFAULT,
    )


def describe(qos: QoSProfile) -> str:
    """'reliable/transient_local/depth 1' for logs."""
    return f"{qos.reliability.name.lower()}/{qos.durability.name.lower()}/depth {qos.depth}"


def same_transports_as_the_stack() -> None:
    """The launcher's Fast DDS builtin transports unless set: participants that differ do not discover
    each other (a LARGE_DATA node and a default recorder see no topics at all)."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", DEFAULT_ENVIRONMENT["FASTDDS_BUILTIN_TRANSPORTS"])
