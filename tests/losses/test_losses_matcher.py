"""Hungarian matcher against brute force over all assignments, incl. empty and crowded images."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision.ops as tv

from unihema.losses.matcher import HungarianMatcher, MatchCache

from .loss_fakes import loss_cfg, random_boxes

NUM_CLASSES = 4


def reference_cost(logits, boxes, labels, tgt_boxes, alpha=0.25, gamma=2.0, w=(2.0, 5.0, 2.0)) -> torch.Tensor:
    """DINO's matching cost written element by element."""
    q, n = logits.shape[0], labels.shape[0]
    giou = tv.generalized_box_iou(tv.box_convert(boxes, "cxcywh", "xyxy"), tv.box_convert(tgt_boxes, "cxcywh", "xyxy"))
    cost = torch.zeros(q, n, dtype=torch.float64)
    for i in range(q):
        for j in range(n):
            p = torch.sigmoid(logits[i, labels[j]]).double()
            pos = alpha * (1 - p) ** gamma * -torch.log(p + 1e-8)
            neg = (1 - alpha) * p**gamma * -torch.log(1 - p + 1e-8)
            l1 = (boxes[i] - tgt_boxes[j]).abs().sum().double()
            cost[i, j] = w[0] * (pos - neg) + w[1] * l1 - w[2] * giou[i, j].double()
    return cost


def brute_force_min(cost: torch.Tensor) -> float:
    """Minimum total cost over every injective assignment of the smaller side."""
    q, n = cost.shape
    if n == 0:
        return 0.0
    if n <= q:
        return min(sum(cost[rows[j], j].item() for j in range(n)) for rows in itertools.permutations(range(q), n))
    return min(sum(cost[i, cols[i]].item() for i in range(q)) for cols in itertools.permutations(range(n), q))


def random_case(seed: int, queries: int, counts: list[int]):
    g = torch.Generator().manual_seed(seed)
    outputs = {
        "pred_logits": torch.randn(len(counts), queries, NUM_CLASSES, generator=g) * 2,
        "pred_boxes": torch.stack([random_boxes(queries, g) for _ in counts]),
    }
    targets = [
        {"labels": torch.randint(0, NUM_CLASSES, (n,), generator=g), "boxes": random_boxes(n, g)} for n in counts
    ]
    return outputs, targets


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("queries, counts", [(5, [3, 0, 5, 1]), (4, [6, 2]), (3, [0, 0])])
def test_matcher_matches_brute_force(seed, queries, counts):
    """The assignment is one-to-one, as large as possible and of minimal total cost."""
    outputs, targets = random_case(seed, queries, counts)
    matcher = HungarianMatcher.from_config(loss_cfg())
    indices = matcher(outputs, targets)
    assert len(indices) == len(counts)
    for b, ((src, tgt), t) in enumerate(zip(indices, targets)):
        n = len(t["labels"])
        assert src.dtype == tgt.dtype == torch.int64
        assert len(src) == len(tgt) == min(queries, n)
        assert len(set(src.tolist())) == len(src) and len(set(tgt.tolist())) == len(tgt)
        cost = reference_cost(outputs["pred_logits"][b], outputs["pred_boxes"][b], t["labels"], t["boxes"])
        got = sum(cost[i, j].item() for i, j in zip(src.tolist(), tgt.tolist()))
        assert got == pytest.approx(brute_force_min(cost), abs=1e-4)


def test_cost_matrix_matches_reference():
    """The vectorized cost equals the element-wise DINO formula."""
    outputs, targets = random_case(7, 6, [4])
    matcher = HungarianMatcher()
    args = outputs["pred_logits"][0], outputs["pred_boxes"][0], targets[0]["labels"], targets[0]["boxes"]
    cost, ref = matcher.cost_matrix(*args), reference_cost(*args)
    torch.testing.assert_close(cost.double(), ref, atol=1e-5, rtol=1e-5)


def test_obvious_assignment_and_sorted_queries():
    """Queries sitting on targets are matched to them, query indices come out sorted."""
    boxes = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2], [0.8, 0.7, 0.1, 0.3]])
    outputs = {"pred_logits": torch.zeros(1, 3, NUM_CLASSES), "pred_boxes": boxes[None]}
    targets = [{"labels": torch.tensor([0, 1]), "boxes": boxes[[2, 0]]}]
    ((src, tgt),) = HungarianMatcher()(outputs, targets)
    assert src.tolist() == [0, 2] and tgt.tolist() == [1, 0]


def test_non_finite_predictions_still_match():
    """NaN boxes do not make scipy raise; the matcher still returns an assignment."""
    outputs, targets = random_case(3, 4, [2])
    outputs["pred_boxes"][0, 1] = float("nan")
    ((src, tgt),) = HungarianMatcher()(outputs, targets)
    assert len(src) == 2


def test_match_cache_matches_each_level_once():
    """MatchCache runs the matcher once per level however often a level is asked for."""
    outputs, targets = random_case(0, 4, [2, 1])
    calls = []

    class Counting(HungarianMatcher):
        def __call__(self, outputs, targets):
            calls.append(1)
            return super().__call__(outputs, targets)

    cache = MatchCache(Counting(), targets)
    first = cache("", outputs)
    assert cache("", outputs) is first and len(calls) == 1
    cache("_0", outputs)
    assert len(calls) == 2


def test_all_zero_costs_rejected():
    """A matcher with every cost weight 0 is refused."""
    with pytest.raises(ValueError):
        HungarianMatcher(0, 0, 0)


def test_prefetch_matches_all_levels_with_one_host_copy(monkeypatch):
    """MatchCache.prefetch gives each level the matching it would get alone, copying costs to the host once."""
    targets = random_case(0, 6, [3, 0, 2])[1]
    levels = [(name, random_case(seed, 6, [3, 0, 2])[0]) for seed, name in enumerate(["", "_0", "_1", "_interm"])]
    alone = {name: HungarianMatcher()(out, targets) for name, out in levels}
    copies = []
    original = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        copies.append(self.shape)
        return original(self, *args, **kwargs)

    cache = MatchCache(HungarianMatcher(), targets)
    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    cache.prefetch(levels)
    monkeypatch.undo()
    assert len(copies) == 1
    for name, out in levels:
        got = cache(name, out)
        assert all(torch.equal(a, b) and torch.equal(c, d) for (a, c), (b, d) in zip(got, alone[name])), name
