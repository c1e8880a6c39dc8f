"""Ray's repeated notices are dropped from the console; its other warnings are not."""

import logging

from unihema.train.console import quiet_ray_loggers


def test_only_the_repeated_notices_are_dropped(caplog):
    quiet_ray_loggers()
    quiet_ray_loggers()  # idempotent: one filter per logger
    cleaner = logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
    progress = logging.getLogger("ray.data._internal.progress")
    assert len(cleaner.filters) == 1 and len(progress.filters) == 1
    with caplog.at_level(logging.INFO):
        cleaner.warning("Failed to query Ray Train Controller actor state. State API may be temporarily unavailable.")
        cleaner.warning("Failed to clean up placement group: boom")
        progress.warning("Progress bars disabled. To enable, set ...")
        logging.getLogger("ray.data._internal.execution.streaming_executor").info("Execution plan of Dataset x")
        logging.getLogger("ray.data._internal.execution.streaming_executor").warning("a real Ray Data warning")
    assert [r.getMessage() for r in caplog.records] == ["Failed to clean up placement group: boom",
                                                        "a real Ray Data warning"]


def test_eta_is_short_and_readable():
    from unihema.train.telemetry import format_duration

    assert [format_duration(s) for s in (0, 12.4, 245, 3720, -3)] == ["0s", "12s", "4m05s", "1h02m", "0s"]
