"""A trial that ASHA stops gives its Train workers' resources back, so the next trials can start.

Without ``ReleaseStoppedTrainRuns`` the stopped trial's Train controller dies with the trial
and its workers' placement group stays reserved (Ray Train's own cleaner needs the State
API, absent without the dashboard): on a 4-CPU cluster the third trial then waits forever.
The sweep runs in a subprocess (a trivial Train loop, no model) so a hang fails the test
instead of the session.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys, time
    import ray, ray.train, ray.tune
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.integration.ray_train import TuneReportCallback
    from unihema.tune.cleanup import ReleaseStoppedTrainRuns

    ROOT = sys.argv[1]  # read here: inside a trial, sys.argv is the Ray worker's

    def per_worker(cfg):
        for step in range(1, 5):
            time.sleep(0.5)
            ray.train.report({"step": step, "score": cfg["score"] + 0.01 * step})

    def trial(cfg):
        DataParallelTrainer(per_worker, train_loop_config=cfg,
                            scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                            run_config=ray.train.RunConfig(name=ray.tune.get_context().get_trial_id(),
                                                           storage_path=ROOT + "/train",
                                                           callbacks=[TuneReportCallback()])).fit()

    ray.init(num_cpus=4, include_dashboard=False)
    results = ray.tune.Tuner(
        ray.tune.with_resources(trial, {"CPU": 0.01}),
        param_space={"score": ray.tune.grid_search([1.0, 0.0, 0.5])},
        tune_config=ray.tune.TuneConfig(metric="score", mode="max", max_concurrent_trials=1, time_budget_s=150,
                                        scheduler=AsyncHyperBandScheduler(time_attr="step", max_t=4, grace_period=2,
                                                                          reduction_factor=2, stop_last_trials=False)),
        run_config=ray.tune.RunConfig(storage_path=ROOT + "/tune", name="sweep", verbose=0,
                                      callbacks=[ReleaseStoppedTrainRuns(period_s=1.0)])).fit()
    print("STEPS", *sorted(r.metrics.get("step", 0) for r in results))
    print("ERRORS", results.num_errors)
""")


def test_stopped_trial_releases_its_workers_for_the_next_trials(tmp_path):
    """Three trials on 4 CPUs, one stopped at the first rung: all three report, none waits for leaked CPUs."""
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "GLOO_SOCKET_IFNAME": "lo",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )
    lines = dict(x.split(" ", 1) for x in proc.stdout.splitlines() if x.startswith(("STEPS ", "ERRORS ")))
    assert proc.returncode == 0 and "STEPS" in lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    steps = [int(s) for s in lines["STEPS"].split()]
    # The 0.0 trial stops at the first rung (step 2); the trial after it got workers and reached a decision too
    # (stalled for CPUs it would end at the time budget with no step at all).
    assert lines["ERRORS"] == "0" and steps[0] == 2 and min(steps) >= 2 and max(steps) == 4, steps
