"""What Ray prints on a training run's console: its own chatter at WARNING, nothing twice.

``WORKER_ENV`` goes into the job's runtime env. ``quiet_ray_loggers`` runs in every Ray
worker process of the job (the runtime env's ``worker_process_setup_hook``) and in the
driver. Ray Data logs each execution's plan, Parquet size estimates and start at INFO from
every training worker, and a WARNING per worker that progress bars are off (we turn them
off). Ray Train's placement-group cleaner (a watchdog actor) logs a WARNING every few
seconds whenever the state API does not answer, which on a 2-core machine without the
dashboard was 409 lines in one demo run while nothing was wrong. Only those two notices are
dropped: the cleaner's other warnings (a dead controller, a failed cleanup) and every Ray
Data warning or error still reach the console.
"""

from __future__ import annotations

import logging

SETUP_HOOK = "unihema.train.console.quiet_ray_loggers"
# Ray Train turns a worker's print() into a root-logger record *and* a write to the wrapped
# stdout, so every line showed twice, and contextlib.redirect_stdout (how pycocotools'
# per-validation tables are kept off the console) no longer captured anything.
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}

_PLACEMENT_GROUP_CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
# logger -> the start of the one message dropped from it
_NOTICES = {
    _PLACEMENT_GROUP_CLEANER: "Failed to query Ray Train Controller actor state",
    "ray.data._internal.progress": "Progress bars disabled",
}


class _DropNotice(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_ray_loggers() -> None:
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    for name, prefix in _NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) for f in logger.filters):
            logger.addFilter(_DropNotice(prefix))
