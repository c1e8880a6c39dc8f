"""Ray's repeated notices are dropped from the console; its other warnings are not."""

import logging

from unihema.train.console import quiet_ray_loggers


def test_only_the_repeated_notices_are_dropped():
    quiet_ray_loggers()
    quiet_ray_loggers()  # idempotent: one filter per logger
    cleaner = logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
    progress = logging.getLogger("ray.data._internal.progress")
    executor = logging.getLogger("ray.data._internal.execution.streaming_executor")
    assert len(cleaner.filters) == 1 and len(progress.filters) == 1
    # A handler of our own on each logger: Ray may have turned propagation to the root off.
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    # ... and an explicit level on the cleaner's logger, whatever Ray's logging config set above it.
    cleaner_level = cleaner.level
    cleaner.setLevel(logging.WARNING)
    for logger in (cleaner, progress, executor):
        logger.addHandler(handler)
    try:
        cleaner.warning("Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.")
        cleaner.warning("Failed to clean up placement group: boom")
        progress.warning("Progress bars disabled. To enable, set ...")
        executor.info("Execution plan of Dataset x")
        executor.warning("a real Ray Data warning")
    finally:
        cleaner.setLevel(cleaner_level)
        for logger in (cleaner, progress, executor):
            logger.removeHandler(handler)
    assert seen == ["Failed to clean up placement group: boom", "a real Ray Data warning"]


def test_eta_is_short_and_readable():
    from unihema.train.telemetry import format_duration

    assert [format_duration(s) for s in (0, 12.4, 245, 3720, -3)] == ["0s", "12s", "4m05s", "1h02m", "0s"]
