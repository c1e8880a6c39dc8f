"""Keep idle Ray Data executions from spinning in the training workers.

Each training worker keeps one streaming execution (its read plan), which is backpressured
most of the time: it reads ahead until its output budget is full, then waits for the
training loop, which spends most of a step in the model. Ray Data's
scheduling loop (``StreamingExecutor._scheduling_loop_step``, Ray 2.60) blocks in ``ray.wait`` only while
it has tasks in flight, and a task whose next block is ready but may not be read yet
(backpressure) ends that wait at once; so a backpressured execution's thread loops without
pause, holding the GIL against the training thread. Measured on the 2-core demo with six
executions per worker: steps 3x slower than the same model in a plain process, most of it
spent waiting for the GIL. With one execution per worker it is still 2x: 7.4 img/s without
the throttle against 14-20 with it (steps 20-80 of the demo preset, same batches).

``install()`` wraps that private method so that a step which made no progress (no task
started or finished, no block produced or handed on) is followed by a short sleep. It is
private API, so ``pyproject.toml`` pins Ray to the minor version tested and
``tests/data/test_executor_idle.py`` fails when the method moves; at run time a missing
method only logs a warning (the runs stay correct, only slower on small machines).
"""

from __future__ import annotations

import functools
import logging
import time

log = logging.getLogger(__name__)

# Long enough to give the GIL away, short against a training step (>= 100 ms on CPU).
IDLE_SLEEP_S = 0.02
_STATE = {"installed": False}


def _progress(topology) -> tuple:
    """What a scheduling step can change: tasks started and finished, blocks produced and handed on."""
    out = []
    for op in topology:
        m = op.metrics
        out.append((m.num_tasks_submitted, m.num_tasks_finished, m.num_task_outputs_generated, m.num_outputs_taken))
    return tuple(out)


def install(idle_sleep_s: float = IDLE_SLEEP_S) -> bool:
    """Patch the streaming executor once per process; returns whether the patch is in place."""
    if _STATE["installed"]:
        return True
    try:
        from ray.data._internal.execution.streaming_executor import StreamingExecutor
    except ImportError:
        log.warning("ray.data's StreamingExecutor moved; idle executions will not be throttled")
        return False
    original = getattr(StreamingExecutor, "_scheduling_loop_step", None)
    if original is None:
        log.warning(
            "StreamingExecutor._scheduling_loop_step is gone in this Ray version; idle executions will not be throttled"
        )
        return False

    @functools.wraps(original)
    def scheduling_loop_step(self, topology):
        before = _progress(topology)
        keep_going = original(self, topology)
        if keep_going and _progress(topology) == before:
            time.sleep(idle_sleep_s)
        return keep_going

    StreamingExecutor._scheduling_loop_step = scheduling_loop_step
    _STATE["installed"] = True
    return True
