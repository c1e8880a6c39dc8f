"""Failing loudly: no usable GPU, a cluster too small for the workers, collective timeouts, per-rank seeds."""

from pathlib import Path

import pytest
import torch

from unihema.config import load_config
from unihema.train import device as devmod
from unihema.train.device import (
    ClusterCapacityError,
    NoUsableGPUError,
    check_cluster_capacity,
    process_group_backend,
    rank_seed,
    require_gpu,
    seed_everything,
    training_device,
    workers_that_fit,
)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where CUDA is unusable")
def test_use_gpu_without_cuda_names_count_torch_cuda_and_driver():
    """train.use_gpu=true on a machine torch cannot use a GPU on is an error, not a quiet CPU run."""
    with pytest.raises(NoUsableGPUError) as err:
        training_device(use_gpu=True)
    text = str(err.value)
    assert "train.use_gpu=true" in text and "device count 0" in text
    assert f"built for CUDA {torch.version.cuda}" in text and "NVIDIA driver" in text
    assert training_device(use_gpu=False) == torch.device("cpu")


def test_old_driver_is_named_as_the_cause(monkeypatch):
    """A driver whose CUDA is older than torch's build is named, with both versions and the fix."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(devmod, "_driver_version", lambda: "535.183.01")
    monkeypatch.setattr(devmod, "_driver_cuda_version", lambda: "12.2")
    with pytest.raises(NoUsableGPUError, match=r"supports CUDA up to 12.2, older than the CUDA 12.8") as err:
        require_gpu()
    assert "device count 8" in str(err.value) and "driver 535.183.01" in str(err.value)


def test_process_group_backend_pairs_gloo_with_nccl_on_gpu():
    """GPU runs get one group with NCCL for CUDA tensors and gloo for CPU ones; CPU runs plain gloo."""
    assert process_group_backend(True) == "cpu:gloo,cuda:nccl"
    assert process_group_backend(False) == "gloo"


def test_collective_timeout_reaches_the_torch_config(tmp_path):
    """train.collective_timeout_min (default minutes, not Ray's 30) becomes the process group timeout."""
    from unihema.train.launch import build_trainer

    cfg = load_config("tiny", overrides=[f"storage.run_uri={tmp_path}"])
    assert 1 <= cfg.train.collective_timeout_min < 30
    cfg = load_config("tiny", overrides=[f"storage.run_uri={tmp_path}", "train.collective_timeout_min=2.5"])
    trainer = build_trainer(cfg, cfg.storage, "t")
    assert trainer.backend_config.timeout_s == 150 and trainer.backend_config.backend == "gloo"


def test_workers_that_fit_count_whole_bundles_per_node():
    """A worker bundle must fit on one node: leftovers on different nodes do not add up."""
    bundle = {"CPU": 8.0, "GPU": 1.0}
    assert workers_that_fit(bundle, [{"CPU": 64.0, "GPU": 8.0}, {"CPU": 12.0, "GPU": 2.0}]) == 9
    assert workers_that_fit(bundle, [{"CPU": 7.0, "GPU": 1.0}, {"CPU": 7.0, "GPU": 1.0}]) == 0


def test_paper_preset_on_a_cpu_cluster_fails_at_once_with_what_to_change():
    """--preset paper where no GPU is: the error says what the cluster has and which settings to change."""
    cfg = load_config("paper")
    nodes = [{"CPU": 66.0, "memory": 2e10}]
    with pytest.raises(ClusterCapacityError) as err:
        check_cluster_capacity(cfg.train, wait_s=0.0, nodes_fn=lambda: nodes)
    text = str(err.value)
    assert "cannot hold 8 training workers of {CPU: 8, GPU: 1}" in text
    assert "GPU 0" in text and "CPU 66" in text and "room for 0 worker(s)" in text
    assert "train.use_gpu=false" in text and "train.num_workers" in text


def test_capacity_check_waits_for_an_autoscaler_then_passes():
    """Joining a cluster that grows within resource_wait_s succeeds without an error."""
    cfg = load_config("tiny", overrides=["train.num_workers=2"]).train
    grown = iter([[{"CPU": 1.0}], [{"CPU": 1.0}, {"CPU": 4.0}]])
    check_cluster_capacity(cfg, wait_s=5.0, poll_s=0.0, nodes_fn=lambda: next(grown))


def test_rank_seeds_differ_and_initial_weights_agree():
    """Ranks draw different dropout/noise streams from rank_seed, while the model seed gives equal weights."""
    from unihema.model import build_model

    seeds = [rank_seed(42, r) for r in range(8)]
    assert len(set(seeds)) == 8 and seeds[0] == 42 and rank_seed(43, 0) not in seeds
    draws = []
    for rank in range(2):
        seed_everything(rank_seed(42, rank))
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1])
    cfg = load_config("tiny")
    states = []
    for rank in range(2):
        torch.manual_seed(cfg.train.seed)  # what the worker does before build_model on every rank
        states.append(build_model(cfg).state_dict())
        seed_everything(rank_seed(cfg.train.seed, rank))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without GPUs")
def test_paper_preset_without_gpus_stops_at_once(tmp_path, subprocess_env):
    """`python -m unihema.pretrain --preset paper` on a CPU machine exits 1 within a minute, naming what to change."""
    import subprocess
    import sys
    import time

    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unihema.pretrain",
            "--preset",
            "paper",
            f"data.uri={tmp_path / 'data'}",
            "data.synthetic_records=16",
            f"storage.run_uri={tmp_path / 'runs'}",
            "storage.embedded=false",
            # Past the initial-weights check (no hub here), to the cluster check.
            "model.backbone.pretrained=checkpoint",
            "model.text.pretrained=checkpoint",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cannot hold 8 training workers" in proc.stderr and "train.use_gpu=false" in proc.stderr
    assert time.monotonic() - start < 120
