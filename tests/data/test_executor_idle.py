"""The idle-execution throttle: installed once, wraps Ray Data's scheduling step, keeps executions working."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest

from unihema.data import executor_idle


def test_install_wraps_the_scheduling_step_once():
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

    assert executor_idle.install()
    wrapped = StreamingExecutor._scheduling_loop_step
    assert hasattr(wrapped, "__wrapped__")
    assert executor_idle.install()  # a second call changes nothing
    assert StreamingExecutor._scheduling_loop_step is wrapped


@pytest.mark.slow
def test_throttled_execution_still_delivers_every_row():
    """With the throttle in place a backpressured stream resumes and yields all its rows, in order."""
    import time

    import ray
    import ray.data

    executor_idle.install()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ds = ray.data.range(400, override_num_blocks=40).map_batches(lambda b: b, batch_size=10)
        seen = []
        for i, batch in enumerate(ds.iter_batches(batch_size=10, prefetch_batches=1)):
            seen.extend(batch["id"].tolist())
            if i in (2, 5):
                time.sleep(0.5)  # the consumer stalls: the execution backpressures and idles
        assert seen == list(range(400))
    finally:
        ray.shutdown()
