"""Closed-vocabulary VQA: each question's answer set, ranked by the model's likelihood."""

from __future__ import annotations

import torch

from unihema.config import load_config
from unihema.evaluation.answer_ranking import RankingTally, answer_sets, rank_answers, rank_batches
from unihema.model import build_model, build_tokenizer


def _batch(tokenizer, questions, answers):
    ids, mask = tokenizer.encode(questions, 24)
    labels, label_mask = tokenizer.encode(answers, 12)
    n = len(questions)
    return {
        "images": torch.randn(n, 3, 64, 64),
        "pixel_mask": torch.zeros(n, 64, 64, dtype=torch.bool),
        "prompt_ids": ids,
        "prompt_mask": mask,
        "text_labels": labels.masked_fill(~label_mask, -100),
    }


def test_answer_sets_join_questions_that_share_answers():
    """Questions sharing an answer are one type with one answer set; unrelated types stay apart."""
    tokenizer = build_tokenizer(load_config("tiny"))
    batches = [
        _batch(
            tokenizer,
            ["is this a basophil?", "what type of cell is this?", "is this a monocyte?"],
            ["yes", "monocyte", "no"],
        ),
        _batch(
            tokenizer,
            ["is this a basophil?", "which cell type is shown?", "what type of cell is this?"],
            ["no", "lymphocyte", "lymphocyte"],
        ),
    ]
    sets = answer_sets(batches, tokenizer)
    assert sets == {
        "is this a basophil?": ["no", "yes"],
        "is this a monocyte?": ["no", "yes"],
        "what type of cell is this?": ["lymphocyte", "monocyte"],
        "which cell type is shown?": ["lymphocyte", "monocyte"],
    }


def test_ranking_picks_the_most_likely_candidate_and_scores_chance():
    """Each row gets the candidate of its question's set with the highest likelihood; chance is the
    per-question majority answer."""
    torch.manual_seed(0)
    cfg = load_config("tiny")
    model = build_model(cfg).eval()
    tokenizer = build_tokenizer(cfg)
    batch = _batch(
        tokenizer, ["is this a basophil?"] * 3 + ["what type of cell is this?"], ["yes", "yes", "no", "monocyte"]
    )
    sets = answer_sets([batch], tokenizer)
    picked = rank_answers(model, batch, sets, tokenizer, cfg.model.text.max_length)
    cand, cand_mask = tokenizer.encode(["no", "yes"], 12)
    for row in range(3):
        scores = model.answer_log_likelihoods(
            batch["images"],
            None,
            batch["prompt_ids"],
            batch["prompt_mask"],
            cand.masked_fill(~cand_mask, -100),
            torch.tensor([row, row]),
        )
        assert picked[row] == ["no", "yes"][int(scores.argmax())]
    assert picked[3] == "monocyte"  # a question with one answer in the data
    out = rank_batches(model, [batch], tokenizer, cfg.model.text.max_length).compute()
    expected = sum(p == r for p, r in zip(picked, ["yes", "yes", "no", "monocyte"])) / 4
    assert out == {"closed_accuracy": expected, "chance_closed_accuracy": 3 / 4, "closed_count": 4}
    assert set(sets) == {"is this a basophil?", "what type of cell is this?"}


def test_ranking_tally_merges_like_one_pass():
    """Two ranks' tallies merged give the counts and chance of one tally over all rows."""
    a, b, whole = RankingTally(), RankingTally(), RankingTally()
    rows = [("q1", "yes", "yes"), ("q1", "no", "yes"), ("q2", "3", "3"), ("q1", "no", "no")]
    a.update(*zip(*rows[:2]))
    b.update(*zip(*rows[2:]))
    whole.update(*zip(*rows))
    a.merge(b.state())
    assert (
        a.compute() == whole.compute() == {"closed_accuracy": 0.75, "chance_closed_accuracy": 0.75, "closed_count": 4}
    )
