"""Each task trains what it should (every parameter gets a gradient) and nothing it should not."""

from __future__ import annotations

import pytest
import torch

from .conftest import make_batch, surrogate_loss

IMAGE_PATH = ("backbone.body.layer2.", "backbone.body.layer4.", "input_proj.", "level_embed", "encoder.layers.")
DETECTOR = IMAGE_PATH + (
    "proposals.",
    "decoder.layers.",
    "decoder.class_embed.",
    "decoder.bbox_embed.",
    "decoder.ref_point_head.",
    "denoising.label_enc.",
)
TEXT = ("text.t5.shared.", "text.t5.encoder.", "text.t5.decoder.", "text.t5.lm_head.", "hema.qformer.")

# task -> (prefixes whose parameters must all get a gradient, a non-zero one somewhere in each
#          prefix; prefixes that must get none)
EXPECTED = {
    "classification": (
        IMAGE_PATH + ("encoder.cell.cls_token", "encoder.cell.fusion.", "encoder.cell.fuse_proj.", "heads.classifier."),
        ("text.", "hema.", "decoder.", "proposals."),
    ),
    "detection": (DETECTOR, ("heads.", "hema.qformer.", "hema.mask_former.", "text.t5.decoder.", "encoder.cell.")),
    "segmentation": (
        DETECTOR
        + (
            "hema.mask_former.mask_embed.",
            "hema.mask_former.class_embed.",
            "hema.mask_former.upsampler.",
            "encoder.mask_features.",
            "encoder.mask_feature_proj.",
        ),
        ("heads.", "hema.qformer.", "text.t5.decoder."),
    ),
    "morphology": (
        IMAGE_PATH + ("encoder.cell.", "heads.morphology.", "decoder.morph_embed."),
        ("hema.qformer.", "hema.mask_former.", "text.t5.decoder."),
    ),
    "vqa": (IMAGE_PATH + TEXT, ("decoder.", "proposals.", "heads.", "hema.mask_former.", "hema.refine.")),
    "mlm": (IMAGE_PATH + TEXT, ("decoder.", "proposals.", "heads.", "hema.mask_former.", "hema.refine.")),
}
# Zero at step 0 by construction: the gated refinement (gate starts closed), the hidden
# layers of box heads whose last layer starts at zero (DINO's init), and the level embedding
# where it only reaches deformable attention (its offset/weight projections start at zero).
ZERO_AT_INIT = (
    "hema.refine.",
    "level_embed",
    "decoder.bbox_embed.layers.0",
    "decoder.bbox_embed.layers.1",
    "proposals.bbox_embed.layers.0",
    "proposals.bbox_embed.layers.1",
)


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_task_gradients_reach_their_parameters(task, tiny_model, tokenizer):
    """Backprop of one task reaches every parameter of its path, non-zero, and no other task's heads."""
    surrogate_loss(tiny_model(make_batch(tokenizer, [task]))).backward()
    reach, avoid = EXPECTED[task]
    params = {n: p for n, p in tiny_model.named_parameters() if p.requires_grad}
    for prefix in reach:
        group = {n: p for n, p in params.items() if n.startswith(prefix)}
        assert group, f"no parameters under {prefix}"
        missing = [n for n, p in group.items() if p.grad is None]
        assert not missing, f"{task}: no gradient for {missing[:5]}"
        if not prefix.startswith(ZERO_AT_INIT):
            assert any(p.grad.abs().sum() > 0 for p in group.values()), f"{task}: zero gradient under {prefix}"
    leaked = [n for n, p in params.items() if p.grad is not None and n.startswith(avoid)]
    assert not leaked, f"{task}: unexpected gradients for {leaked[:5]}"


def test_refinement_gate_starts_closed_then_trains(tiny_model, tokenizer):
    """The text-guided refinement is the identity at init; once the gate opens the text trains detection."""
    refine = tiny_model.hema.refine
    q, text = torch.randn(2, 4, 32), torch.randn(2, 5, tiny_model.text.d_model)
    assert torch.equal(refine(q, text), q)
    with torch.no_grad():
        refine.gate_mlp[2].bias.fill_(1.0)
    surrogate_loss(tiny_model(make_batch(tokenizer, ["detection"]))).backward()
    for name in ("text_proj.weight", "cross_attn.in_proj_weight", "combined_proj.weight"):
        assert refine.get_parameter(name).grad.abs().sum() > 0
    assert tiny_model.text.t5.encoder.block[0].layer[0].SelfAttention.q.weight.grad.abs().sum() > 0


def test_frozen_parts_get_no_gradient(tokenizer):
    """With the official freezing, the stem, layer1 and every BatchNorm stay out of training."""
    from unihema.model import build_model

    from .conftest import tiny_config

    model = build_model(
        tiny_config(
            "model.backbone.frozen_stages=1",
            "model.backbone.frozen_batchnorm=true",
            "model.backbone.pretrained=checkpoint",
        )
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("backbone.body.conv1", "backbone.body.layer1")) for n in trainable)
    assert not any(".bn" in n or "downsample.1" in n for n in trainable if n.startswith("backbone."))
    assert any(n.startswith("backbone.body.layer2") for n in trainable)


def test_activation_checkpointing_gives_the_same_gradients(tokenizer):
    """Recomputing encoder/decoder layers and T5 blocks in backward changes no gradient."""
    from unihema.model import build_model

    from .conftest import tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config("model.text.dropout_rate=0")).train()
    batch = make_batch(tokenizer, ["segmentation", "vqa"], batch_size=1, size=(64, 64))

    def grads():
        model.zero_grad()
        surrogate_loss(model(batch)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.set_activation_checkpointing(True)
    recomputed = grads()
    assert plain.keys() == recomputed.keys()
    for name in plain:
        assert torch.allclose(plain[name], recomputed[name], atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("look_forward_twice", [True, False])
def test_final_box_gradient_reaches_exactly_one_earlier_layer(look_forward_twice, tokenizer):
    """DINO's look-forward-twice: the last box trains the previous layer's delta and none older."""
    from unihema.model import build_model

    from .conftest import tiny_config

    torch.manual_seed(0)
    model = build_model(
        tiny_config("model.decoder.layers=4", f"model.decoder.look_forward_twice={str(look_forward_twice).lower()}")
    ).train()
    with torch.no_grad():  # DINO's zero init of the box head's last layer would hide every path
        model.decoder.bbox_embed.layers[-1].weight.normal_(std=0.1)
    deltas = []
    handle = model.decoder.bbox_embed.register_forward_hook(lambda m, i, out: deltas.append(out))
    out = model(make_batch(tokenizer, ["detection"]))
    handle.remove()
    grads = torch.autograd.grad(out["pred_boxes"].sum(), deltas, allow_unused=True)
    norms = [0.0 if g is None else g.abs().sum().item() for g in grads]
    assert len(norms) == 4 and norms[3] > 0
    if look_forward_twice:
        assert norms[2] > 0 and norms[0] == norms[1] == 0, norms
    else:
        assert norms[0] == norms[1] == norms[2] == 0, norms
