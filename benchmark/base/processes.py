"""Work in processes of its own, for every scheduler of the suite (the grid's ``--jobs`` workers in
``executors.local``, the profiler's one process per measurement in ``benchmark.measure.costs``): a crash
or an out-of-memory kill stays in that process, and a child never outlives its parent."""
from __future__ import annotations

import multiprocessing
import os
import threading
import time

CONTEXT = multiprocessing.get_context("spawn")        # no fork: torch's threads do not survive it


def _exit_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """End this process when the one that started it is gone (killed, even with SIGKILL: its
    children are then re-parented): a worker never works on, unseen, after its command died."""
    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _body(parent: int, target, args) -> None:
    _exit_with_parent(parent)
    target(*args)


def start(target, *args) -> multiprocessing.Process:
    """``target(*args)`` in a fresh (spawned) process that ends with this one; returns it started."""
    process = CONTEXT.Process(target=_body, args=(os.getpid(), target, args))
    process.start()
    return process


def run_isolated(target, *args) -> tuple[dict | None, int | None]:
    """``target(*args, queue)`` in its own process, waited for; returns (the dict it put on the
    queue or None, the process's exit code)."""
    queue = CONTEXT.Queue()
    process = start(target, *args, queue)
    process.join()
    return (queue.get() if not queue.empty() else None), process.exitcode


def out_of_memory(exitcode: int | None, message: str = "") -> bool:
    """Whether a process ran out of memory: killed by the kernel's OOM killer (SIGKILL, exit code
    -9), or an allocator's "out of memory" error."""
    return exitcode == -9 or "out of memory" in message.lower()
