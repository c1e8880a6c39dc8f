"""Text generation is conditioned on the image (the official release answered from the prompt alone)."""

from __future__ import annotations

import torch

from unihema.model import build_model

from .conftest import tiny_config


def _model():
    torch.manual_seed(0)
    return build_model(tiny_config()).eval()


def test_generation_depends_on_the_image(tokenizer):
    """Same prompt, different image: the greedy and beam answers or their scores change."""
    model = _model()
    ids, mask = tokenizer.encode(["what type of cell is this?", "is the nucleolus prominent?"], 24)
    g = torch.Generator().manual_seed(1)
    image_a = torch.randn(2, 3, 64, 64, generator=g)
    image_b = torch.randn(2, 3, 64, 64, generator=g) * 2.0 + 1.0
    for beams in (1, 3):
        seq_a, score_a = model.generate_text(
            image_a, None, ids, mask, max_new_tokens=4, num_beams=beams, return_scores=True
        )
        seq_b, score_b = model.generate_text(
            image_b, None, ids, mask, max_new_tokens=4, num_beams=beams, return_scores=True
        )
        assert seq_a.shape[0] == 2 and seq_a[:, 0].eq(0).all()  # decoder start = <pad>
        assert torch.isfinite(score_a).all() and (score_a <= 0).all()
        differs = not torch.equal(seq_a, seq_b) or not torch.allclose(score_a, score_b, atol=1e-4)
        assert differs, f"num_beams={beams}: the answer ignores the image"


def test_generation_matches_teacher_forcing(tokenizer):
    """The greedy tokens are the argmax of the training-time logits for the same image and prompt."""
    model = _model()
    ids, mask = tokenizer.encode(["what type of cell is this?"], 24)
    images = torch.randn(1, 3, 64, 64)
    seq = model.generate_text(images, None, ids, mask, max_new_tokens=4)
    labels = seq[:, 1:]
    with torch.no_grad():
        out = model({"images": images, "tasks": ["vqa"], "prompt_ids": ids, "prompt_mask": mask, "text_labels": labels})
    assert torch.equal(out["text_logits"].argmax(-1), labels)


def test_generation_never_ends_before_its_first_token(tokenizer):
    """With the end-of-sequence logit forced highest, the first generated token is still not </s>."""
    model = _model()
    eos = model.text.t5.config.eos_token_id
    with torch.no_grad():
        model.text.t5.lm_head.bias = torch.nn.Parameter(torch.zeros(model.text.t5.lm_head.out_features))
        model.text.t5.lm_head.bias[eos] = 1e4
    ids, mask = tokenizer.encode(["what type of cell is this?", "is the nucleolus prominent?"], 24)
    seq = model.generate_text(torch.randn(2, 3, 64, 64), None, ids, mask, max_new_tokens=4)
    assert seq.shape[1] >= 2 and not seq[:, 1].eq(eos).any() and seq[:, 2].eq(eos).all()


def test_answer_log_likelihoods_match_the_training_loss(tokenizer):
    """Each candidate's summed log-likelihood equals minus the teacher-forced token cross-entropy sum."""
    model = _model()
    ids, mask = tokenizer.encode(["what type of cell is this?", "is the nucleolus prominent?"], 24)
    images = torch.randn(2, 3, 64, 64)
    answers = ["lymphocyte", "monocyte", "yes", "no", "not sure"]
    owner = torch.tensor([0, 0, 1, 1, 1])
    cand, cand_mask = tokenizer.encode(answers, 12)
    labels = cand.masked_fill(~cand_mask, -100)
    scores = model.answer_log_likelihoods(images, None, ids, mask, labels, owner)
    assert scores.shape == (5,) and (scores < 0).all()
    with torch.no_grad():
        logits = model(
            {
                "images": images[owner],
                "tasks": ["vqa"],
                "prompt_ids": ids[owner],
                "prompt_mask": mask[owner],
                "text_labels": labels,
            }
        )["text_logits"]
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    assert torch.allclose(scores, -ce.sum(1), atol=1e-4)
