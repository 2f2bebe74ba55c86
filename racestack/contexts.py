"""Opening and closing the rclpy contexts of tools and tests (probes, the recorder, the replayer),
without hanging the process that holds them.

Each private context is a DDS participant, and destroying its last node deletes the participant,
which Fast DDS can block on for ever with the GIL held (most likely closing LARGE_DATA's TCP
channels): nothing else in the process runs again. A process that opens and closes many of them (the test run, the
``racestack`` command) calls ``share_one_context`` first: every private context is then one
participant, kept by an idle anchor node until the process ends (``os._exit``), so none is ever
deleted, and peers discover it once instead of once per probe.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rclpy is imported on first use: the racestack command shares before it knows it needs ROS
    from rclpy.context import Context
    from rclpy.executors import Executor
    from rclpy.node import Node

_sharing = False
_shared: Context | None = None
_shared_anchor: Node | None = None


def share_one_context() -> None:
    """Makes every later ``open_private_context`` return one context, created on first use, whose
    participant outlives the nodes opened in it: an anchor node keeps it (rmw deletes a participant
    with its last node). The process must then end with ``os._exit`` (``racestack.process.leave``)."""
    global _sharing
    _sharing = True


def open_private_context(signal_handlers: bool = False) -> Context:
    """A context of the caller's own, or the shared one after ``share_one_context``."""
    global _shared, _shared_anchor
    if _sharing and _shared is None:
        _shared = _new_context(signal_handlers=False)
        _shared_anchor = anchor_participant("racestack_context_anchor", _shared)
    return _shared if _sharing else _new_context(signal_handlers)


def anchor_participant(name: str, context: Context | None = None, namespace: str = "") -> Node:
    """An idle node that keeps its context's DDS participant: rmw deletes a participant with its
    last node. Global arguments are ignored (a ``__node`` remap must not rename it)."""
    from rclpy.node import Node

    return Node(name, context=context, namespace=namespace, use_global_arguments=False, enable_rosout=False,
                start_parameter_services=False)


def _new_context(signal_handlers: bool) -> Context:
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    context = Context()
    rclpy.init(context=context,
               signal_handler_options=SignalHandlerOptions.ALL if signal_handlers else SignalHandlerOptions.NO)
    return context


def close_private_node(node: Node, context: Context, executor: Executor | None = None, timeout_s: float = 5.0) -> bool:
    """Destroys ``node`` and shuts ``context`` down unless it is the shared one; False if the node
    could not be destroyed in time."""
    if executor is not None:
        executor.shutdown(timeout_sec=1.0)
    destroyed = destroy_node_watched(node, timeout_s)
    if context is not _shared:
        import rclpy

        rclpy.try_shutdown(context=context)
    return destroyed


def destroy_node_watched(node: Node, timeout_s: float = 5.0) -> bool:
    """Destroys ``node`` from a helper thread; False, and the node left to the process's exit, if
    that takes longer than ``timeout_s``.

    ``destroy_node`` blocks until no wait set holds the node's entities; an executor left inside a
    wait (an exception raised mid-spin) can hold them for ever, and a recorder or evaluator that
    hangs at exit loses more than a node left to the process's end.
    """
    destroyed = threading.Event()

    def destroy() -> None:
        node.destroy_node()
        destroyed.set()

    threading.Thread(target=destroy, name=f"destroy-{node.get_name()}", daemon=True).start()
    if not destroyed.wait(timeout_s):
        print(f"racestack: node '{node.get_name()}' still in use after {timeout_s:.0f} s; left to the process's exit",
              file=sys.stderr, flush=True)
    return destroyed.is_set()
