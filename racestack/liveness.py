"""Whether each node's messages reach anyone, and a restart for one whose messages do not.

On this kind of machine Fast DDS has (rarely, under load) started a node process whose discovery
works — its topics are advertised and matched — but whose published samples reach no other process,
even over shared memory on one host (eProsima/Fast-DDS#5244 describes the same symptom). The stack
then waits for ever for that node's outputs. Every racestack node publishes /diagnostics on a timer,
so a node not heard from once its outputs are advertised is such a process: it is restarted once
(a new process gets new transport resources) and named if it stays silent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection

from diagnostic_msgs.msg import DiagnosticArray

from racestack.launcher import LaunchSession
from racestack.node import MATCHED_PUBLISHERS, MATCHED_SUBSCRIBERS
from racestack.probe import Probe

HEARD_TIMEOUT_S = 15.0  # diagnostics come every second; a loaded machine delays the first ones
LINK_TIMEOUT_S = 30.0  # discovery between a dozen participants on a loaded 2-core machine


class Heartbeats:
    """The nodes whose /diagnostics have reached this probe, and the latest values of each."""

    def __init__(self, probe: Probe) -> None:
        self._names: set[str] = set()
        self._values: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        probe.collect(DiagnosticArray, "/diagnostics", keep=1, callback=self._on_diagnostics)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self._lock:
            for status in msg.status:
                name = status.name.lstrip("/")
                self._names.add(name)
                self._values[name] = {kv.key: kv.value for kv in status.values}

    def values(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return dict(self._values)

    def forget(self, names: Collection[str]) -> None:
        with self._lock:
            self._names.difference_update(names)

    def silent(self, names: Collection[str]) -> list[str]:
        with self._lock:
            return sorted(set(names) - self._names)

    def wait(self, session: LaunchSession, names: Collection[str], timeout_s: float,
             alive: Callable[[], bool] = lambda: True) -> list[str]:
        """The running nodes among ``names`` not heard from after ``timeout_s`` (sooner if ``alive``
        fails); a node that exited is the launcher's to report, not a silent one."""
        deadline = time.monotonic() + timeout_s
        while alive():
            running = set(session.running())
            silent = [name for name in self.silent(names) if name in running]
            if not silent or time.monotonic() >= deadline:
                return silent
            time.sleep(0.05)
        return []


def restart_silent(session: LaunchSession, heartbeats: Heartbeats, names: Collection[str],
                   timeout_s: float = HEARD_TIMEOUT_S, alive: Callable[[], bool] = lambda: True) -> list[str]:
    """Waits to hear from every node in ``names``, restarting the silent ones once; those still silent."""
    silent = heartbeats.wait(session, names, timeout_s, alive)
    if not silent:
        return []
    session.echo(f"[racestack launch] nothing from {', '.join(silent)} reaches other processes after "
                 f"{timeout_s:.0f} s (no /diagnostics: a DDS transport fault); restarting")
    heartbeats.forget(silent)
    session.restart(silent)
    return heartbeats.wait(session, silent, timeout_s, alive)


def ready_or_restarted(session: LaunchSession, ready: Callable[[], bool], timeout_s: float,
                       late: Callable[[], list[str]], alive: Callable[[], bool] = lambda: True,
                       detail: Callable[[], str] = lambda: "") -> bool:
    """Waits for ``ready()``; if it does not come, restarts once the nodes ``late()`` names (a
    participant that missed a peer's discovery does not catch up by waiting) and waits again."""
    if _ready_within(ready, timeout_s, alive):
        return True
    names = late()
    if not names:
        return False
    session.echo(f"[racestack launch] not ready after {timeout_s:.0f} s ({detail()}); restarting {', '.join(names)}")
    session.restart(names)
    return _ready_within(ready, timeout_s, alive)


def _ready_within(ready: Callable[[], bool], timeout_s: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if not alive() or time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def unmatched_links(reports: dict[str, dict[str, str]],
                    external: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """(node, what) for each link between the reporting nodes (and ``external`` publishers: topic ->
    their matched readers) that one side has not matched yet; a sample sent before both sides match
    is lost to the late one (volatile QoS). The node named is the late side ("replayer" for
    ``external``).

    Each node reports, per input, the writers its reader matched and, per output, the readers its
    writer matched (``RacestackNode`` diagnostics).
    """
    external = external or {}
    consumers: dict[str, list[tuple[str, int]]] = {}
    producers: dict[str, list[tuple[str, int]]] = {}
    for node, values in reports.items():
        for key, value in values.items():
            if key.startswith(MATCHED_PUBLISHERS):
                consumers.setdefault(key[len(MATCHED_PUBLISHERS):], []).append((node, int(value)))
            elif key.startswith(MATCHED_SUBSCRIBERS):
                producers.setdefault(key[len(MATCHED_SUBSCRIBERS):], []).append((node, int(value)))
    problems = []
    for topic, readers in sorted(consumers.items()):
        writers = len(producers.get(topic, [])) + (topic in external)
        problems += [(node, f"{node} has matched {count} of {writers} publishers of {topic}")
                     for node, count in readers if count < writers]
        wanted = len(readers)
        problems += [(node, f"{node} has matched {count} of {wanted} subscribers of {topic}")
                     for node, count in producers.get(topic, []) if count < wanted]
        if topic in external and external[topic] < wanted:
            problems.append(("replayer", f"the replayer has matched {external[topic]} of {wanted} "
                                         f"subscribers of {topic}"))
    return problems


def restart_unlinked(session: LaunchSession, heartbeats: Heartbeats, external: Callable[[], dict[str, int]],
                     restartable: Collection[str], timeout_s: float = LINK_TIMEOUT_S,
                     alive: Callable[[], bool] = lambda: True) -> list[str]:
    """Waits until every link is matched on both sides, restarting once the ``restartable`` nodes on
    the late side of a link (a participant that missed a peer's discovery); what is still unmatched."""
    def problems() -> list[tuple[str, str]]:
        names = set(session.running())
        reports = {name: values for name, values in heartbeats.values().items() if name in names}
        return unmatched_links(reports, external())

    def settled() -> list[tuple[str, str]]:
        deadline = time.monotonic() + timeout_s
        while (found := problems()) and time.monotonic() < deadline and alive():
            time.sleep(0.1)
        return found

    late = sorted({node for node, _ in settled() if node in restartable})
    if late:
        session.echo(f"[racestack launch] links still unmatched after {timeout_s:.0f} s: "
                     f"{'; '.join(text for _, text in problems())}; restarting {', '.join(late)}")
        heartbeats.forget(late)
        session.restart(late)
        heartbeats.wait(session, late, HEARD_TIMEOUT_S, alive)
    return [text for _, text in settled()]


def ensure_live(session: LaunchSession, heartbeats: Heartbeats, restartable: Collection[str],
                external: Callable[[], dict[str, int]] = dict, heard_timeout_s: float = HEARD_TIMEOUT_S,
                link_timeout_s: float = LINK_TIMEOUT_S, alive: Callable[[], bool] = lambda: True) -> str | None:
    """Every node heard from, then every link matched, each fault given one restart; what is still
    wrong (None when all is well)."""
    silent = restart_silent(session, heartbeats, restartable, heard_timeout_s, alive)
    if silent:
        return (f"nothing that {', '.join(silent)} publish reaches other processes, even after a restart "
                "(no /diagnostics): a DDS transport fault on this machine")
    unmatched = restart_unlinked(session, heartbeats, external, restartable, link_timeout_s, alive)
    if unmatched:
        return "links between the nodes not matched, even after a restart: " + "; ".join(unmatched)
    return None
