"""A bag's topics as time-ordered samples (receive time, header stamp, decoded message), for metrics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.serialization import deserialize_message

from racestack.bags import Bag
from racestack.cdr import header_stamp_ns, message_class


@dataclass(slots=True)
class Sample:
    recv_ns: int
    stamp_ns: int | None
    msg: Any


class Recording:
    """Selected topics of one or more bags, decoded once; missing topics are simply empty.

    A topic comes from the last bag that has it: with ``[input bag, output bag]`` the outputs of the
    run replace any recorded earlier, and ground truth comes from the input.
    """

    def __init__(self, bags: Iterable[str | Path], topics: Iterable[str]) -> None:
        self.topics: dict[str, list[Sample]] = {t: [] for t in topics}
        self.source: dict[str, Path] = {}
        self.problems: list[str] = []
        self.available: set[str] = set()
        for path in bags:
            with Bag(path) as bag:
                self.available |= set(bag.topics)
                wanted = [t for t in self.topics if t in bag.topics]
                classes = {t: message_class(bag.topics[t].msgtype) for t in wanted}
                for topic in wanted:
                    self.topics[topic], self.source[topic] = [], Path(path)
                for message in bag.messages(wanted):
                    cls = classes[message.topic]
                    stamp = header_stamp_ns(message.data, cls)
                    decoded = deserialize_message(message.data, cls)
                    self.topics[message.topic].append(Sample(message.time_ns, stamp, decoded))
                self.problems += [str(p) for p in bag.problems]
        for samples in self.topics.values():
            samples.sort(key=lambda s: s.recv_ns)

    def drop(self, topic: str) -> None:
        self.topics[topic] = []
        self.source.pop(topic, None)

    def __getitem__(self, topic: str) -> list[Sample]:
        return self.topics.get(topic, [])

    def has(self, topic: str) -> bool:
        return bool(self.topics.get(topic))

    def by_stamp(self, topic: str) -> dict[int, Sample]:
        """First sample per header stamp (later duplicates of a stamp are ignored)."""
        table: dict[int, Sample] = {}
        for sample in self[topic]:
            if sample.stamp_ns is not None:
                table.setdefault(sample.stamp_ns, sample)
        return table
