"""Give back the workers' resources of Train runs whose trial the scheduler stopped.

When ASHA stops a trial, Tune ends the trial's process, which kills the Train controller
it started before the controller can remove its workers' placement group. Ray keeps a
placement group for as long as the job that created it lives, so without help the stopped
trial's CPUs/GPUs stay reserved until the sweep ends, and the next trials wait for them
forever. Ray Train's own PlacementGroupCleaner should remove it, but it asks the State API,
which is absent when Ray runs without its dashboard (as ``init_ray`` starts it locally) and
gets confused when several local Ray instances share a machine.

``ReleaseStoppedTrainRuns`` is a Tune callback on the sweep's driver that removes, every few
seconds, each placement group of this job that a Train controller created and that outlived
it. It reads the GCS tables through ``ray._private.state`` (what ``placement_group_table``
uses, with the creator fields it drops); if that private API changes, it logs once and
does nothing.
"""

from __future__ import annotations

import logging
import time

from ray.tune import Callback

log = logging.getLogger(__name__)
CONTROLLER_CLASS = "TrainController"


def orphaned_train_groups() -> list[bytes]:
    """Ids of this job's live placement groups whose creator, a Train controller, is dead."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    job = ray.get_runtime_context().get_job_id()
    accessor = state._connect_and_get_accessor()
    found = []
    for raw in accessor.get_placement_group_table():
        group = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if (
            group.state == gcs_pb2.PlacementGroupTableData.REMOVED
            or group.is_detached
            or not group.creator_actor_dead
            or group.creator_job_id.hex() != job
        ):
            continue
        creator = state.actor_table(group.creator_actor_id.hex()) or {}
        if str(creator.get("ActorClassName", "")).endswith(CONTROLLER_CLASS):
            found.append(group.placement_group_id)
    return found


def release_orphaned_train_groups() -> int:
    import ray
    from ray.util.placement_group import PlacementGroup

    released = 0
    for group_id in orphaned_train_groups():
        try:
            ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(group_id)))
            released += 1
        except Exception as err:  # already being removed by Ray Train itself
            log.debug("placement group %s not removed: %s", group_id.hex(), err)
    if released:
        log.info("released the workers' placement group of %d stopped trial(s)", released)
    return released


class ReleaseStoppedTrainRuns(Callback):
    """Tune callback: every ``period_s`` of the sweep loop, release orphaned Train placement groups."""

    def __init__(self, period_s: float = 5.0):
        self.period_s = period_s
        self._last = 0.0
        self._broken = False

    def on_step_begin(self, iteration, trials, **info):
        now = time.monotonic()
        if self._broken or now - self._last < self.period_s:
            return
        self._last = now
        try:
            release_orphaned_train_groups()
        except Exception as err:  # a private Ray API changed: keep sweeping, say what may stall
            self._broken = True
            log.warning(
                "cannot release the placement groups of stopped trials (%s); trials stopped early may "
                "keep their workers' resources until the sweep ends (tune.scheduler=fifo avoids it)",
                err,
            )
