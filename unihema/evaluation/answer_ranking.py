"""Closed-vocabulary VQA: rank the answers a question can have by the model's likelihood.

Exact match of a greedy answer says nothing until the decoder has learned to spell a whole
answer and stop; early in training it reads 0 while the model may already prefer the right
answer. Ranking asks the same model a closed question instead: of the answers given to
this question's type anywhere in the evaluated data (its "answer set": yes/no, the cell
classes, an attribute's values, counts), which has the highest summed log-likelihood under teacher
forcing? Its chance level is the constant guess: the most frequent answer of each question
type (questions that share answers are one type, see :func:`answer_sets`).

The VQA evaluator (:class:`unihema.evaluation.evaluators.VQAEvaluator`, for training
validation and ``python -m unihema.evaluate`` alike) calls these functions on the batches it
holds in memory, because the answer sets are only known after one pass over the data.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch


def _strip(row) -> list[int]:
    return [int(t) for t in row if int(t) != -100]


def questions_and_answers(batch: dict, tokenizer) -> tuple[list[str], list[str]]:
    """Each row's prompt (the question, as the model reads it) and reference answer, as text."""
    prompts = tokenizer.decode(
        [
            [int(t) for t, keep in zip(ids, mask) if keep]
            for ids, mask in zip(batch["prompt_ids"].tolist(), batch["prompt_mask"].tolist())
        ]
    )
    answers = tokenizer.decode([_strip(r) for r in batch["text_labels"].tolist()])
    return [p.strip().lower() for p in prompts], [a.strip().lower() for a in answers]


def answer_sets(batches: list[dict], tokenizer) -> dict[str, list[str]]:
    """{question: the answer set of its type}, sorted.

    Questions are worded many ways ("Is this a basophil?", "Is this a monocyte?"), so a
    question's own answers would often be a single one. Questions that share any answer are
    one type (connected components of the question-answer graph): every yes/no question
    forms one set, every cell-type question another, each attribute's values another.
    """
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    asked: set[str] = set()
    for batch in batches:
        for question, answer in zip(*questions_and_answers(batch, tokenizer)):
            asked.add(question)
            parent[find("q:" + question)] = find("a:" + answer)
    members: dict[str, set[str]] = defaultdict(set)
    for node in list(parent):
        if node.startswith("a:"):
            members[find(node)].add(node[2:])
    return {q: sorted(members[find("q:" + q)]) for q in asked}


@torch.no_grad()
def rank_answers(model, batch: dict, sets: dict[str, list[str]], tokenizer, max_length: int) -> list[str]:
    """The most likely answer of each row's answer set (its question's), one decoder pass for all."""
    questions, _ = questions_and_answers(batch, tokenizer)
    candidates = [sets.get(q) or [""] for q in questions]
    flat = [c for cands in candidates for c in cands]
    ids, mask = tokenizer.encode(flat, max_length=max_length)
    ids = ids.to(batch["prompt_ids"].device)
    labels = ids.masked_fill(~mask.to(ids.device).bool(), -100)
    owner = torch.tensor([i for i, cands in enumerate(candidates) for _ in cands], device=ids.device)
    scores = model.answer_log_likelihoods(
        batch["images"], batch["pixel_mask"], batch["prompt_ids"], batch["prompt_mask"], labels, owner
    )
    best, start = [], 0
    for cands in candidates:
        best.append(cands[int(scores[start : start + len(cands)].argmax())])
        start += len(cands)
    return best


class RankingTally:
    """Mergeable counts for closed-vocabulary accuracy and its constant-guess chance level."""

    def __init__(self):
        self.correct = 0
        self.total = 0
        self.by_question: dict[str, Counter] = defaultdict(Counter)

    def update(self, types: list[str], predictions: list[str], references: list[str]) -> None:
        """``types``: each row's question type (its answer set), the unit of the chance level."""
        for q, p, r in zip(types, predictions, references):
            self.correct += int(p == r)
            self.total += 1
            self.by_question[q][r] += 1

    def state(self) -> dict:
        return {"correct": self.correct, "total": self.total, "by_question": dict(self.by_question)}

    def merge(self, state: dict) -> None:
        self.correct += state["correct"]
        self.total += state["total"]
        for q, counts in state["by_question"].items():
            self.by_question[q].update(counts)

    def compute(self) -> dict:
        if not self.total:
            return {}
        guess = sum(max(c.values()) for c in self.by_question.values())
        return {
            "closed_accuracy": self.correct / self.total,
            "chance_closed_accuracy": guess / self.total,
            "closed_count": self.total,
        }


def rank_batches(
    model, batches: list[dict], tokenizer, max_length: int, tally: RankingTally | None = None
) -> RankingTally:
    """Rank every row of ``batches`` against the answer sets found in them; chance is counted
    per answer set (the most frequent answer of each question type)."""
    tally = tally or RankingTally()
    sets = answer_sets(batches, tokenizer)
    for batch in batches:
        questions, references = questions_and_answers(batch, tokenizer)
        types = ["|".join(sets[q]) for q in questions]
        tally.update(types, rank_answers(model, batch, sets, tokenizer, max_length), references)
    return tally


__all__ = ["RankingTally", "answer_sets", "questions_and_answers", "rank_answers", "rank_batches"]
