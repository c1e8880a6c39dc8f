"""Two Ray nodes on this machine, shaped like the cluster configs in cluster/: does placement follow?

One node offers the training resource (``unihema_trainer``, what the GPU worker group
advertises), the other only data CPUs (``unihema_data``, what the CPU data-worker group
advertises). A small TorchTrainer asks for ``unihema_trainer`` per worker, and each worker
builds a Ray Data pipeline shaped like the training stream's (read units -> map_batches)
whose tasks ask for what the stream's read-and-decode tasks ask for under
cluster/paper-cluster.yaml (``decode_task_args``). The node ids recorded from inside the
workers and the map tasks must match the shapes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TRAINER_RESOURCE = "unihema_trainer"
DATA_RESOURCE = "unihema_data"
REPO = Path(__file__).resolve().parents[2]


def _free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(closing(socket.socket())) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _record_node(batch: dict) -> dict:
    """Ray Data map_batches UDF: tag every row with the node (and process) that ran it."""
    import ray

    n = len(batch["id"])
    batch["node"] = [ray.get_runtime_context().get_node_id()] * n
    batch["pid"] = [os.getpid()] * n
    return batch


def _train_loop(config: dict) -> None:
    """Each worker notes its node, streams its share of the shards through Ray Data, writes what it saw."""
    import ray
    import ray.data
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # As unihema/data/pipeline.py's build_plan_dataset: one block per read unit, one task per block.
    units = [{"id": i} for i in range(rank, 64, world)]
    ds = ray.data.from_items(units, override_num_blocks=len(units) // 4)
    ds = ds.map_batches(_record_node, batch_format="numpy", batch_size=None, **config["task_args"])
    rows = [row for batch in ds.iter_batches(batch_size=16, batch_format="numpy") for row in batch["node"]]
    record = {
        "rank": rank,
        "worker_node": ray.get_runtime_context().get_node_id(),
        "map_nodes": sorted(set(map(str, rows))),
        "rows": len(rows),
    }
    Path(config["out"], f"rank{rank}.json").write_text(json.dumps(record))


def test_train_workers_on_trainer_node_and_data_tasks_on_data_node(tmp_path, monkeypatch):
    """TorchTrainer workers land on the `unihema_trainer` node, their Ray Data tasks on the `unihema_data` node."""
    import ray
    import ray._private.utils
    from ray.cluster_utils import Cluster
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from unihema.config import load_config
    from unihema.data.pipeline import decode_task_args

    cfg = load_config(files=[REPO / "cluster" / "paper-cluster.yaml"])
    task_args = decode_task_args(cfg.data)
    assert task_args["resources"] == {DATA_RESOURCE: 0.01}
    out = tmp_path / "out"
    out.mkdir()

    # The loop and the UDF live in this test module, which Ray's workers cannot import: ship them by value.
    module = sys.modules.get(_train_loop.__module__)
    if module is not None:
        ray.cloudpickle.register_pickle_by_value(module)
    if ray.is_initialized():
        ray.shutdown()
    # Short, private temp dir (unix socket paths are limited); the "current cluster" address
    # file goes there too instead of /tmp/ray, where another `ray.init("auto")` could find it.
    temp_dir = tempfile.mkdtemp(prefix="uhpl", dir="/tmp")
    write_address = ray._private.utils.write_ray_address
    monkeypatch.setattr(
        ray._private.utils, "write_ray_address", lambda address, temp_dir_=None: write_address(address, temp_dir)
    )
    gcs_port, head_agent, data_agent = _free_ports(3)
    start = time.monotonic()
    cluster = None
    try:
        # The training node has 2 CPUs to spare beyond its 2 workers: without the data resource,
        # the map tasks would run there (checked once by hand: they did), so the test discriminates.
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "gcs_server_port": gcs_port,
                "node_ip_address": "127.0.0.1",
                "temp_dir": temp_dir,
                "include_dashboard": False,
                "dashboard_agent_listen_port": head_agent,
                "num_cpus": 4,
                "resources": {TRAINER_RESOURCE: 2},
            },
        )
        trainer_node = cluster.head_node.node_id
        data_node = cluster.add_node(
            node_ip_address="127.0.0.1",
            temp_dir=temp_dir,
            dashboard_agent_listen_port=data_agent,
            num_cpus=2,
            resources={DATA_RESOURCE: 2},
        ).node_id
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"task_args": task_args, "out": str(out)},
            scaling_config=ScalingConfig(
                num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1, **cfg.train.worker_resources}
            ),
            run_config=RunConfig(name="placement", storage_path=str(tmp_path / "runs")),
            torch_config=TorchConfig(backend="gloo"),
        )
        trainer.fit()
        records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if module is not None:
            ray.cloudpickle.unregister_pickle_by_value(module)
        shutil.rmtree(temp_dir, ignore_errors=True)
    elapsed = time.monotonic() - start
    assert trainer_node != data_node
    assert sum(r["rows"] for r in records) == 64, records
    for r in records:
        assert r["worker_node"] == trainer_node, (r, trainer_node, data_node)
        assert r["map_nodes"] == [data_node], (r, trainer_node, data_node)
    print(f"placement ok in {elapsed:.0f}s: workers on {trainer_node[:8]}, map tasks on {data_node[:8]}")
