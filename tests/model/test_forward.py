"""Forward + backward of every task on the tiny preset: output contract, shapes, finiteness."""

from __future__ import annotations

import pytest
import torch

from unihema import labels
from unihema.model import UniHema, build_model

from .conftest import ALL_TASKS, make_batch, surrogate_loss, tensors, tiny_config

B, H, W = 2, 64, 80
Q = tiny_config().model.decoder.num_queries
C_DET, C_CELL, C_SEG, N_ATTR = (
    len(labels.DETECTION_CLASSES),
    len(labels.CELL_CLASSES),
    len(labels.SEGMENTATION_CLASSES),
    len(labels.MORPHOLOGY_ATTRIBUTES),
)
DETECTION_KEYS = {"pred_logits", "pred_boxes", "pred_morphology", "aux_outputs", "interm_outputs"}
CELL_KEYS = {"cell_logits", "cell_morphology", "cell_feature"}


def _check_detection(out, num_layers):
    assert out["pred_logits"].shape == (B, Q, C_DET)
    assert out["pred_boxes"].shape == (B, Q, 4)
    assert out["pred_morphology"].shape == (B, Q, N_ATTR)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    assert len(out["aux_outputs"]) == num_layers - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (B, Q, C_DET) and aux["pred_boxes"].shape == (B, Q, 4)
        assert aux["pred_morphology"].shape == (B, Q, N_ATTR)
    interm = out["interm_outputs"]
    assert interm["pred_logits"].shape == (B, Q, C_DET) and interm["pred_boxes"].shape == (B, Q, 4)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_single_task_forward_backward(task, tiny_model, tokenizer):
    """Each task alone returns its outputs with the contract's shapes, finite, and backpropagates."""
    batch = make_batch(tokenizer, [task], B, (H, W))
    out = tiny_model(batch)
    expected = {
        "detection": DETECTION_KEYS | {"dn_outputs", "dn_meta"},
        "classification": CELL_KEYS,
        "segmentation": DETECTION_KEYS
        | {"dn_outputs", "dn_meta", "pred_masks", "semantic_logits", "mask_class_logits"},
        "morphology": CELL_KEYS | DETECTION_KEYS,  # no box loss, so no DN queries
        "vqa": {"text_logits"},
        "mlm": {"text_logits"},
    }[task]
    assert set(out) == expected
    if "pred_logits" in out:
        _check_detection(out, tiny_model.cfg.decoder.layers)
    if "cell_logits" in out:
        d = tiny_model.cfg.hidden_dim
        assert out["cell_logits"].shape == (B, C_CELL)
        assert out["cell_morphology"].shape == (B, N_ATTR) and out["cell_feature"].shape == (B, d)
    if "pred_masks" in out:
        assert out["pred_masks"].shape == (B, Q, H // 8, W // 8)
        assert out["semantic_logits"].shape == (B, C_SEG, H // 2, W // 2)
    if "text_logits" in out:
        assert out["text_logits"].shape == (*batch["text_labels"].shape, tiny_model.cfg.text.vocab_size)
    for t in tensors(out):
        if t.is_floating_point():
            assert torch.isfinite(t).all()
    surrogate_loss(out).backward()
    grads = [p.grad for p in tiny_model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_all_tasks_in_one_batch(tiny_model, tokenizer):
    """A batch holding every task returns the union of the outputs in one pass."""
    out = tiny_model(make_batch(tokenizer, ALL_TASKS, B, (H, W)))
    assert DETECTION_KEYS | CELL_KEYS | {"pred_masks", "semantic_logits", "text_logits", "dn_outputs"} <= set(out)
    surrogate_loss(out).backward()


def test_detection_without_prompt_and_in_eval(tiny_model, tokenizer):
    """Detection runs without a prompt (no refinement) and, in eval mode, without DN outputs."""
    batch = make_batch(tokenizer, ["detection"], B, (H, W))
    del batch["prompt_ids"], batch["prompt_mask"]
    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model(batch)
    assert "dn_outputs" not in out and "dn_meta" not in out
    _check_detection(out, tiny_model.cfg.decoder.layers)


def test_padded_tokens_are_ignored():
    """The single-cell feature and the Q-Former read no information from padded tokens."""
    from unihema.model.hemaformer import CellFeatureExtractor, QFormer

    torch.manual_seed(0)
    cell, qformer = CellFeatureExtractor(32, 4, 64).eval(), QFormer(32, 48, 4, 8, 1).eval()
    memory, pos = torch.randn(2, 20, 32), torch.randn(2, 20, 32)
    pad = torch.zeros(2, 20, dtype=torch.bool)
    pad[:, 15:] = True
    changed = memory.clone()
    changed[:, 15:] = 100.0
    text = torch.randn(2, 5, 48)
    with torch.no_grad():
        assert torch.allclose(cell(memory, pos, pad), cell(changed, pos, pad), atol=1e-5)
        assert torch.allclose(qformer(memory, pos, pad, text), qformer(changed, pos, pad, text), atol=1e-5)


def test_unknown_task_is_refused(tiny_model, tokenizer):
    """A task name outside the six raises with the allowed names."""
    with pytest.raises(ValueError, match="unknown tasks"):
        tiny_model(make_batch(tokenizer, ["captioning"], B, (H, W)))


def test_from_config_and_meta_build():
    """UniHema.from_config takes the full config; the registry builds on the meta device."""
    cfg = tiny_config()
    assert isinstance(UniHema.from_config(cfg), UniHema)
    meta = build_model(cfg, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
