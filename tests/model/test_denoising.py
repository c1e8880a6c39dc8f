"""Contrastive denoising queries: built when enabled, isolated from the matching queries, contract meta."""

from __future__ import annotations

import torch

from unihema.model import build_model
from unihema.model.denoising import DenoisingQueries

from .conftest import make_batch, surrogate_loss, tiny_config


def test_dn_outputs_and_meta(tiny_model, tokenizer):
    """With DN on in training, dn_outputs and dn_meta follow the contract and index real targets."""
    batch = make_batch(tokenizer, ["detection"])
    out = tiny_model(batch)
    meta, dn = out["dn_meta"], out["dn_outputs"]
    counts = [len(t["labels"]) for t in batch["targets"]]
    groups = tiny_model.cfg.decoder.dn_number // max(counts)
    assert meta["num_groups"] == groups and meta["pad_size"] == 2 * max(counts) * groups
    assert dn["pred_logits"].shape[:2] == dn["pred_boxes"].shape[:2] == (2, meta["pad_size"])
    assert len(dn["aux_outputs"]) == tiny_model.cfg.decoder.layers - 1
    for pos, tgt, n in zip(meta["positive_idx"], meta["target_idx"], counts):
        assert pos.dtype == tgt.dtype == torch.long and len(pos) == len(tgt) == n * groups
        assert int(pos.max()) < meta["pad_size"] and sorted(set(tgt.tolist())) == list(range(n))
    surrogate_loss(out).backward()
    assert tiny_model.denoising.label_enc.weight.grad.abs().sum() > 0


def test_dn_off_in_eval_without_targets_and_when_disabled(tokenizer):
    """No DN outputs in eval, without targets, or with dn_enabled false (and no label embedding then)."""
    torch.manual_seed(0)
    on = build_model(tiny_config("model.decoder.dn_enabled=true"))
    batch = make_batch(tokenizer, ["detection"])
    no_targets = {k: v for k, v in batch.items() if k != "targets"}
    assert "dn_outputs" not in on.train()(no_targets)
    with torch.no_grad():
        assert "dn_outputs" not in on.eval()(batch)
    off = build_model(tiny_config("model.decoder.dn_enabled=false")).train()
    assert off.denoising is None and "dn_outputs" not in off(batch)


def test_a_batch_without_boxes_still_reaches_the_dn_embedding(tiny_model, tokenizer):
    """No boxes on this rank: no DN queries, but the DN embedding gets an exactly zero gradient.

    Under ZeRO-2 every rank must reduce gradients of the same parameters; a rank whose batch
    has no boxes while another's has some would otherwise leave the embedding out (a
    collective size mismatch that killed the demo's workers).
    """
    batch = make_batch(tokenizer, ["detection"])
    for target in batch["targets"]:
        target["labels"], target["boxes"] = target["labels"][:0], target["boxes"][:0]
        target["morphology"] = target["morphology"][:0]
    tiny_model.zero_grad()
    out = tiny_model(batch)
    assert "dn_outputs" not in out
    surrogate_loss(out).backward()
    grad = tiny_model.denoising.label_enc.weight.grad
    assert grad is not None and torch.count_nonzero(grad) == 0


def test_matching_queries_cannot_see_dn_queries(tokenizer):
    """The attention mask isolates the matching queries: their outputs are the same with or without DN."""
    torch.manual_seed(0)
    model = build_model(tiny_config("model.decoder.dn_enabled=true")).train()
    batch = make_batch(tokenizer, ["detection"])
    with torch.no_grad():
        with_dn = model(batch)
        without = model({k: v for k, v in batch.items() if k != "targets"})
    assert "dn_outputs" in with_dn
    for key in ("pred_logits", "pred_boxes", "pred_morphology"):
        assert torch.allclose(with_dn[key], without[key], atol=1e-5), key


def test_dn_groups_mask_and_noise():
    """Groups do not see each other; positives stay near their box, negatives farther away."""
    torch.manual_seed(0)
    dn = DenoisingQueries(num_classes=29, d_model=16, dn_number=6, label_noise_ratio=0.0, box_noise_scale=1.0)
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]])
    targets = [
        {"labels": torch.tensor([3, 4]), "boxes": boxes},
        {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]
    content, refs, mask, meta = dn(targets, num_queries=5)
    pad, single = meta["pad_size"], meta["single_pad"]
    assert meta["num_groups"] == 3 and pad == 12 and mask.shape == (17, 17)
    assert mask[pad:, :pad].all() and not mask[:, pad:].any()
    for g in range(3):
        lo, hi = 2 * single * g, 2 * single * (g + 1)
        assert not mask[lo:hi, lo:hi].any()
        assert mask[lo:hi, :lo].all() and mask[lo:hi, hi:pad].all()
    assert len(meta["positive_idx"][1]) == 0
    noisy = refs.sigmoid()[0]
    pos, neg = meta["positive_idx"][0], meta["positive_idx"][0] + single
    err_pos = (noisy[pos, :2] - boxes.repeat(3, 1)[:, :2]).abs().max()
    err_neg = (noisy[neg] - boxes.repeat(3, 1)).abs().sum(-1)
    assert err_pos <= 0.2 + 1e-4 and (err_neg > 0).all()
    assert content.shape == (2, pad, 16)


def test_no_dn_queries_on_batches_without_a_box_loss(tiny_model, tokenizer):
    """A morphology batch runs the detector for per-query attributes but builds no DN queries."""
    out = tiny_model(make_batch(tokenizer, ["morphology"]))
    assert "pred_morphology" in out and "dn_outputs" not in out
    surrogate_loss(out).backward()
    assert tiny_model.denoising.label_enc.weight.grad is not None  # still in the graph (ZeRO buckets)
    assert "dn_outputs" in tiny_model(make_batch(tokenizer, ["detection"]))
