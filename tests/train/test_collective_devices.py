"""Every tensor the training loop hands to torch.distributed is on the model's device (NCCL takes CUDA only).

On a CPU machine a host tensor and a "model device" tensor are both CPU, so a regression to
``torch.tensor([...])`` without a device would pass unseen. The helpers are therefore run
with torch's default device set to ``meta``: a tensor built without an explicit device lands
there, and the wrapped collective refuses it. The full loop runs with the same check in
every worker in ``test_bf16_run.py``.
"""

import pytest
import torch
import torch.distributed as dist

from unihema.train.collectives import (
    CollectiveDeviceError,
    all_ranks_finite,
    check_devices,
    mean_over_ranks,
    sum_over_ranks,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gloo_group():
    """A one-rank gloo group on 127.0.0.1 (without DeepSpeed, so plain torch tears it down)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_check_devices_refuses_a_tensor_off_the_model_device():
    """The wrapper raises, naming both devices, before the collective runs; it restores torch.distributed after."""
    original = dist.all_reduce
    with check_devices(torch.device("cuda", 0)):
        with pytest.raises(CollectiveDeviceError, match=r"on cpu, the model is on cuda:0"):
            dist.all_reduce(torch.ones(1))
        with pytest.raises(CollectiveDeviceError):
            dist.all_gather([torch.ones(1)], torch.ones(1))
    assert dist.all_reduce is original


def test_loop_helpers_build_their_tensors_on_the_loss_device(gloo_group):
    """Finite flag, throughput sums and box-count means reach the collective on the model's device, not the default
    one."""
    record: list = []
    loss = torch.tensor(2.5, device=CPU)
    with check_devices(CPU, record), torch.device("meta"):
        finite = all_ranks_finite(loss)
        totals = sum_over_ranks([3.0, 4.0], CPU)
        counts = mean_over_ranks(torch.tensor([5.0, 1.0], device=CPU))
    assert [name for name, _ in record] == ["all_reduce"] * 3
    assert all(device == CPU for _, device in record)
    assert finite.item() == 1.0 and totals.tolist() == [3.0, 4.0] and counts.tolist() == [5.0, 1.0]


def test_a_non_finite_loss_on_any_rank_stops_the_step(gloo_group):
    """all_ranks_finite reports 0 for an inf or NaN loss (MIN over ranks)."""
    assert all_ranks_finite(torch.tensor(float("inf"))).item() == 0.0
    assert all_ranks_finite(torch.tensor([1.0, float("nan")])).item() == 0.0


def test_criterion_reduces_box_counts_on_the_outputs_device():
    """The criterion's num_boxes all-reduce gets a tensor on the predictions' device (checked with meta as default)."""
    from unihema.config import load_config
    from unihema.losses import UniHemaCriterion

    seen: list[torch.device] = []

    def reducer(counts: torch.Tensor) -> torch.Tensor:
        seen.append(counts.device)
        return counts

    cfg = load_config("tiny")
    criterion = UniHemaCriterion(cfg.loss, num_boxes_reducer=reducer)
    outputs = {"cell_logits": torch.randn(2, 5, requires_grad=True)}
    batch = {"tasks": ["classification"], "cell_labels": torch.tensor([0, 3])}
    with torch.device("meta"):
        criterion(outputs, batch)
    assert seen == [CPU]
