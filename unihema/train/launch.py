"""The driver side of a training run: storage, Ray, the TorchTrainer, and what comes after.

Used by ``python -m unihema.pretrain`` and by each Ray Tune trial. It joins the Ray
cluster it is given (``RAY_ADDRESS`` or the job's cluster under ``ray job submit``) or
starts a local one bound to 127.0.0.1, starts the embedded S3 server when the config asks
for S3 with no endpoint, fills an empty data URI with synthetic records, and runs the
trainer with checkpoints, retries and resume configured from the config.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from dataclasses import dataclass

from unihema.config import StorageConfig, UniHemaConfig, save_config
from unihema.config.core import dump_yaml
from unihema.data.shards import read_manifest
from unihema.storage import StorageSession, check_access, ensure_bucket, open_filesystem, parse_uri
from unihema.train.console import SETUP_HOOK, WORKER_ENV, quiet_ray_loggers
from unihema.train.run_files import has_checkpoints, read_json, read_text, write_json, write_text

log = logging.getLogger(__name__)


def open_storage(cfg: UniHemaConfig) -> StorageSession:
    """Start the embedded S3 server when needed and check that every URI is reachable."""
    uris = [cfg.data.uri, cfg.storage.run_uri]
    if cfg.model.init_from.startswith("s3://"):
        uris.append(cfg.model.init_from)
    session = StorageSession(cfg.storage, uris)
    if session.server is not None:
        # Local Ray workers inherit the driver's environment: that is how they get the credentials.
        os.environ.update(session.server.env())
        log.info("embedded S3 server at %s (data in %s)", session.server.endpoint_url, session.server.data_dir)
    try:
        for uri in uris:
            if parse_uri(uri).is_s3:
                ensure_bucket(uri, session.storage)
            check_access(uri, session.storage)
    except BaseException:
        session.close()
        raise
    return session


class IncompatibleStateError(ValueError):
    """What is already in storage (a dataset, a run's checkpoints) was made with other settings."""


def ensure_dataset(cfg: UniHemaConfig, storage: StorageConfig) -> dict:
    """The manifest of cfg.data.uri, generating synthetic records first when it is empty."""
    manifest = read_manifest(cfg.data.uri, storage)
    if manifest is not None:
        check_synthetic_manifest(manifest, cfg)
        check_task_records(manifest, cfg)
        return manifest
    if not cfg.data.synthetic_records:
        raise FileNotFoundError(
            f"no dataset at {cfg.data.uri} (no manifest.json): convert data there with "
            f"`python -m data_prep convert ...`, or set data.synthetic_records > 0"
        )
    from unihema.data.synthetic import generate_dataset

    start = time.perf_counter()
    manifest = generate_dataset(
        cfg.data.synthetic_records,
        cfg.data.uri,
        storage,
        seed=cfg.data.synthetic_seed,
        image_size=cfg.data.synthetic_image_size,
        fov_width_um=cfg.data.synthetic_fov_width_um,
        progress=False,
    )
    log.info(
        "generated %d synthetic records into %s in %.1fs",
        manifest["records"],
        cfg.data.uri,
        time.perf_counter() - start,
    )
    return manifest


def check_task_records(manifest: dict, cfg: UniHemaConfig) -> None:
    """Refuse a task mix that trains tasks the dataset has no training records of.

    A converted dataset usually holds a few of the six tasks (BCCD: detection and text). Without
    this check the run starts Ray, builds the model and fails minutes later inside a worker
    ("task ... has no train records"), and every restart fails the same way. Switching such
    tasks off silently would hide a conversion that lost a task, so the error says how to.
    """
    split_task = (manifest.get("counts") or {}).get("split_task")
    if split_task is None:  # a manifest from before per-split task counts: nothing to check against
        return
    present = {key.split("/", 1)[1] for key, n in split_task.items() if key.startswith("train/") and n > 0}
    asked = [name for name, weight in vars(cfg.data.mix).items() if weight > 0]
    missing = [task for task in asked if task not in present]
    if not missing:
        return
    holds = ", ".join(f"{task} ({split_task[f'train/{task}']})" for task in sorted(present)) or "no task"
    also = "" if len(missing) < len(asked) else " and a weight > 0 for one of its tasks"
    raise IncompatibleStateError(
        f"the dataset at {cfg.data.uri} has no train records for {', '.join(missing)}, which data.mix trains; "
        f"it has train records for {holds}. Train on what it holds with "
        f"{' '.join(f'data.mix.{task}=0' for task in missing)}{also}, "
        f"or convert data for those tasks into it."
    )


def check_synthetic_manifest(manifest: dict, cfg: UniHemaConfig) -> None:
    """Refuse synthetic data made with other generator settings than the config asks for.

    Without this, a bucket filled by an earlier version of a preset (say, wider fields of
    view) would be trained on silently. Converted real data (no synthetic generator in its
    manifest) and ``data.synthetic_records=0`` are left alone.
    """
    generator = manifest.get("generator") or {}
    if generator.get("name") != "unihema.data.synthetic" or not cfg.data.synthetic_records:
        return
    from unihema.data.synthetic.scenes import FOV_WIDTH_UM

    wanted = {
        "n": cfg.data.synthetic_records,
        "seed": cfg.data.synthetic_seed,
        "image_size": cfg.data.synthetic_image_size,
        "fov_width_um": cfg.data.synthetic_fov_width_um,
    }
    # Manifests written before the field width was a setting were all made at the default.
    found = dict(generator, fov_width_um=generator.get("fov_width_um", FOV_WIDTH_UM))
    differ = _differences({k: found.get(k) for k in wanted}, wanted)
    if differ:
        said = ", ".join(f"{key}: {old} there, {new} asked" for key, old, new in differ)
        raise IncompatibleStateError(
            f"the synthetic dataset at {cfg.data.uri} was generated with other settings "
            f"({said}); point data.uri at a new location, or delete that dataset to have "
            "it regenerated"
        )


def keep_local_ray_on_loopback() -> None:
    """Make a Ray cluster started by this process bind and advertise 127.0.0.1 only.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is first imported, so entry points
    call this before anything imports ray. Joining an existing cluster is left alone.
    """
    if (
        "ray" in sys.modules
        and not os.environ.get("RAY_ADDRESS")
        and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0"
    ):
        log.warning(
            "ray was imported before the loopback setting; a local cluster may advertise "
            "this machine's address (set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)"
        )
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def init_ray(cfg: UniHemaConfig, embedded_env: bool = False) -> None:
    """Join the given cluster, or start a local one that keeps all traffic on 127.0.0.1."""
    keep_local_ray_on_loopback()
    quiet_ray_loggers()
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        # Joining a cluster (e.g. under `ray job submit`): the embedded server's credentials,
        # when this process started one, reach the workers only through the runtime env.
        env_vars = {k: v for k, v in os.environ.items() if k.startswith("AWS_")} if embedded_env else {}
        runtime_env = {"worker_process_setup_hook": SETUP_HOOK, "env_vars": {**WORKER_ENV, **env_vars}}
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, runtime_env=runtime_env)
        return
    # Training workers reserve their CPUs for the whole run; Ray Data's decode tasks need
    # CPUs of their own, so a local cluster advertises both.
    reserved = math.ceil(cfg.train.num_workers * cfg.train.cpus_per_worker)
    ray.init(
        num_cpus=(os.cpu_count() or 1) + reserved,
        include_dashboard=False,
        runtime_env={
            "worker_process_setup_hook": SETUP_HOOK,
            "env_vars": {
                **WORKER_ENV,
                **{k: v for k, v in os.environ.items() if k.startswith(("AWS_", "GLOO_", "TORCH_EXTENSIONS_DIR"))},
            },
        },
    )


def worker_config(cfg: UniHemaConfig, storage: StorageConfig) -> dict:
    """The config the workers get: the storage endpoint in force, never the secrets (they travel in the env)."""
    resolved = dataclasses.replace(
        cfg,
        storage=dataclasses.replace(
            cfg.storage, endpoint_url=storage.endpoint_url, access_key_id="", secret_access_key="", embedded=False
        ),
    )
    return resolved.to_dict()


def run_name_of(cfg: UniHemaConfig) -> str:
    return cfg.run_name or f"unihema-{cfg.preset or 'custom'}"


def build_trainer(cfg: UniHemaConfig, storage: StorageConfig, run_name: str, shard_index=None):
    """The run's TorchTrainer. ``shard_index`` (``build_train_index``) goes to every worker;
    without it each worker reads the shards' footers itself."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from unihema.train.device import process_group_backend, worker_bundle
    from unihema.train.worker import train_loop_per_worker

    run_root = parse_uri(cfg.storage.run_uri)
    fs, root_path = open_filesystem(run_root, storage)
    resources = worker_bundle(cfg.train)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": worker_config(cfg, storage),
            "run_uri": str(run_root.join(run_name)),
            "shard_index": shard_index,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=root_path,
            storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        ),
        torch_config=TorchConfig(
            backend=process_group_backend(cfg.train.use_gpu),
            timeout_s=max(1, round(cfg.train.collective_timeout_min * 60)),
        ),
    )


@dataclass
class RunOutcome:
    run_uri: str
    status: dict
    checkpoint_path: str | None
    checkpoint_filesystem: object | None
    metrics: dict


def check_resumable(run_uri: str, cfg: UniHemaConfig, storage: StorageConfig) -> None:
    """Refuse to resume a run whose checkpoints hold another model than the config builds.

    Ray Train resumes a run name from its latest checkpoint; with a changed model section
    (say, more decoder queries) DeepSpeed would fail on every retry with a raw state-dict
    size mismatch. Training settings may change between resumes (more steps, another lr).
    """
    import yaml

    old_text = read_text(run_uri, "config.yaml", storage)
    if old_text is None or not has_checkpoints(run_uri, storage):
        return
    # Whether to trust an init_from file says nothing about the model the checkpoints hold.
    old = {k: v for k, v in ((yaml.safe_load(old_text) or {}).get("model", {})).items() if k != "trust_checkpoint"}
    new = {
        k: v for k, v in yaml.safe_load(dump_yaml(cfg, redact=True)).get("model", {}).items() if k != "trust_checkpoint"
    }
    differ = _differences({"model": old}, {"model": new})
    if differ:
        shown = "; ".join(f"{key}: {a!r} there, {b!r} now" for key, a, b in differ[:5])
        more = f" (and {len(differ) - 5} more)" if len(differ) > 5 else ""
        raise IncompatibleStateError(
            f"run {run_uri} has checkpoints of a model built with other settings "
            f"({shown}{more}); start a new run with run_name=<name>, or delete that run "
            "to start it afresh"
        )


def _differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) of every leaf where two nested dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in list(old) + [k for k in new if k not in old]:
            found += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return found
    return [] if old == new else [(prefix, old, new)]


def run_training(cfg: UniHemaConfig, storage: StorageConfig) -> RunOutcome:
    """Fit, then read back the run's status; resumes automatically from the run's latest checkpoint."""
    run_name = run_name_of(cfg)
    run_uri = str(parse_uri(cfg.storage.run_uri).join(run_name))
    check_resumable(run_uri, cfg, storage)
    write_text(run_uri, "config.yaml", dump_yaml(cfg, redact=True), storage)
    if cfg.model.init_from and not has_checkpoints(run_uri, storage):
        from unihema.train.init_weights import prepare_init_weights

        prepare_init_weights(cfg, storage, run_uri)
    from unihema.data.stream import build_train_index
    from unihema.train.device import check_cluster_capacity

    # The shards' footers and task columns are read once, here, not by every worker and epoch.
    trainer = build_trainer(cfg, storage, run_name, shard_index=build_train_index(cfg.data, storage))

    # Ray Train would retry starting a worker group that cannot be placed for ever; a local
    # cluster started here cannot grow, a joined one may (autoscaler), for a while.
    check_cluster_capacity(cfg.train, wait_s=cfg.train.resource_wait_s if os.environ.get("RAY_ADDRESS") else 0.0)
    result = trainer.fit()
    status = read_json(run_uri, "status.json", storage) or {"status": "unknown: the workers wrote no status"}
    checkpoint = result.checkpoint
    if checkpoint is not None:
        from unihema.storage.verify import verify_stored_checkpoint

        # Ray Train uploaded it; before the run names it, every file the ranks wrote is there, full size.
        verify_stored_checkpoint(checkpoint.filesystem, checkpoint.path, f"checkpoint {checkpoint.path}")
    return RunOutcome(
        run_uri,
        status,
        checkpoint.path if checkpoint else None,
        checkpoint.filesystem if checkpoint else None,
        dict(result.metrics or {}),
    )


__all__ = [
    "IncompatibleStateError",
    "RunOutcome",
    "StorageSession",
    "build_trainer",
    "ensure_dataset",
    "init_ray",
    "open_storage",
    "run_training",
    "save_config",
    "write_json",
    "worker_config",
]
