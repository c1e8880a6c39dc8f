"""The precision recipe on CPU: fp32 weights, bf16 autocast forward, fp32 coordinates, boxes and losses."""

import sys
from pathlib import Path

import pytest
import torch

from unihema.config import load_config
from unihema.losses import UniHemaCriterion
from unihema.model import build_model
from unihema.ops import MSDeformAttn
from unihema.train.deepspeed_config import deepspeed_config
from unihema.train.precision import Precision, resolve_precision, to_fp32

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from train_bench import make_batches  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = load_config("tiny")
    return cfg, build_model(cfg).train(), make_batches(cfg, 2, 6)


def test_deepspeed_never_casts_the_parameters():
    """bf16 is autocast's job: DeepSpeed's bf16/fp16 parameter casts stay off in every precision."""
    for precision in ("auto", "fp32", "bf16"):
        cfg = load_config("tiny", overrides=[f"train.precision={precision}"]).train
        for on_gpu in (False, True):
            ds = deepspeed_config(cfg, micro_batch_size=2, world_size=2, on_gpu=on_gpu)
            assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert resolve_precision(load_config("tiny").train, on_gpu=True) == "bf16"
    assert resolve_precision(load_config("tiny").train, on_gpu=False) == "fp32"


def test_bf16_forward_keeps_coordinates_boxes_and_losses_fp32(tiny):
    """Under the bf16 recipe convs/matmuls run in bf16 while sampling locations, boxes and every loss are fp32."""
    cfg, model, batches = tiny
    amp = Precision("bf16", torch.device("cpu"))
    criterion = UniHemaCriterion(cfg.loss)
    seen = {"locations": set(), "linear": set()}

    def on_msda(module, args, output):
        seen["locations"].add(module.sampling(args[0], args[1], args[3])[0].dtype)

    def on_linear(module, args, output):
        seen["linear"].add(output.dtype)

    hooks = [m.register_forward_hook(on_msda) for m in model.modules() if isinstance(m, MSDeformAttn)]
    hooks.append(model.proposals.enc_output.register_forward_hook(on_linear))
    try:
        task, batch = next((t, b) for t, b in batches if t == "detection")
        with amp.autocast():
            outputs = model(batch)
            losses = amp.criterion(criterion, outputs, batch)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen["linear"] == {torch.bfloat16}, "autocast did not run the forward in bf16"
    assert seen["locations"] == {torch.float32}
    assert outputs["pred_boxes"].dtype == torch.float32
    assert all(o["pred_boxes"].dtype == torch.float32 for o in outputs["aux_outputs"])
    assert outputs["interm_outputs"]["pred_boxes"].dtype == torch.float32
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_bf16_step_of_every_task_has_fp32_finite_gradients(tiny):
    """Each task's loss under the recipe backpropagates into fp32 parameters with finite fp32 gradients."""
    cfg, model, batches = tiny
    amp = Precision("bf16", torch.device("cpu"))
    criterion = UniHemaCriterion(cfg.loss)
    for task, batch in batches:
        model.zero_grad(set_to_none=True)
        with amp.autocast():
            loss = amp.criterion(criterion, model(batch), batch)["loss"]
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads, task
        assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads), task
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_to_fp32_casts_half_tensors_and_keeps_the_graph():
    """to_fp32 widens bf16 leaves inside nested dicts/lists, leaves others alone, and gradients flow back."""
    x = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)
    ids = torch.arange(3)
    out = to_fp32({"a": [x * 2, ids], "b": (x,), "c": "text"})
    assert out["a"][0].dtype == torch.float32 and out["a"][1] is ids and out["c"] == "text"
    (out["a"][0].sum() + out["b"][0].sum()).backward()
    assert x.grad is not None and torch.equal(x.grad.float(), torch.full((3,), 3.0))


def test_fp32_precision_is_a_no_op_and_fp16_is_refused():
    """fp32 leaves autocast off; fp16 (no loss scaling here) is not a precision the config accepts."""
    from unihema.config import ConfigError

    with Precision("fp32", torch.device("cpu")).autocast():
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ConfigError, match="fp16"):
        load_config("tiny", overrides=["train.precision=fp16"])


def test_flop_count_runs_inside_no_grad_and_autocast(tiny):
    """The loop's first-step FLOP count (GPU runs only) works under no_grad + bf16 autocast, as the worker calls it."""
    from unihema.train.telemetry import count_flops

    cfg, model, batches = tiny
    batch = dict(batches)["classification"]
    with torch.no_grad(), Precision("bf16", torch.device("cpu")).autocast():
        flops = count_flops(lambda: model(batch))
    assert flops > 1e8
