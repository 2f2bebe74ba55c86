"""Closing a node that runs in its own rclpy context inside a tool or test process, without hanging it.

Only for a node whose executor has stopped (the recorder, the replayer, a node process after its
spin): started while another thread still spins the node, the helper thread can wait for ever for
the GIL that thread holds inside rclpy. Destroying the last node deletes the DDS participant, which
Fast DDS can block on for ever (open TCP channels of LARGE_DATA): the caller then goes on.
"""

from __future__ import annotations

import sys
import threading

import rclpy
from rclpy.context import Context
from rclpy.executors import Executor
from rclpy.node import Node


def close_private_node(node: Node, context: Context, executor: Executor | None = None, timeout_s: float = 5.0) -> bool:
    """Destroys ``node`` and shuts ``context`` down; False if the node could not be destroyed in time.

    ``destroy_node`` blocks until no wait set holds the node's entities; an executor left inside a
    wait (an exception raised mid-spin) can hold them for ever, and a recorder or evaluator that
    hangs at exit loses more than a node left to the process's end.
    """
    if executor is not None:
        executor.shutdown(timeout_sec=1.0)
    destroyed = threading.Event()

    def destroy() -> None:
        node.destroy_node()
        destroyed.set()

    threading.Thread(target=destroy, name=f"destroy-{node.get_name()}", daemon=True).start()
    if not destroyed.wait(timeout_s):
        print(f"racestack: node '{node.get_name()}' still in use after {timeout_s:.0f} s; left to the process's exit",
              file=sys.stderr, flush=True)
    rclpy.try_shutdown(context=context)
    return destroyed.is_set()
