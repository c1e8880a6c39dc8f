"""The read plan: which records each rank reads and when, whatever the shard layout (no Ray needed)."""

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unihema.data.plan import PIECE_ROWS, NoRecordsForRankError, RankPlan, ShardIndex, build_shard_index


def _index(layout: dict[str, list[int]]) -> ShardIndex:
    """task -> rows per file: one row group per file, files numbered in order across tasks."""
    pieces, paths = {}, []
    for task, files in layout.items():
        for rows in files:
            file_no = len(paths)
            paths.append(f"{task}-{file_no}.parquet")
            for start in range(0, rows, PIECE_ROWS):
                pieces.setdefault(task, []).append((file_no, 0, np.arange(start, min(rows, start + PIECE_ROWS))))
    return ShardIndex(paths, pieces)


def _records(plan: RankPlan, task: str, batches: int, where: dict | None = None) -> list[tuple[int, int, int]]:
    """(file, row group, row) of each planned row of the next ``batches`` batches of ``task``.

    ``where`` (plan key -> record) carries the rows read for earlier calls on the same plan.
    """
    where = {} if where is None else where
    out = []
    for _ in range(batches):
        keys = plan.next_batch(task)
        if keys is None:
            break
        out.extend(keys)
    where.update({int(k): (u.file, u.row_group, int(r)) for u in plan.take_pending() for k, r in zip(u.keys, u.rows)})
    return [where[k] for k in out]


def test_every_rank_gets_every_task_whatever_the_shard_layout():
    """Detection in 3 big shards, segmentation in one shard of 10 records: 4 ranks each get both, disjointly."""
    index = _index({"detection": [200, 150, 90], "segmentation": [10]})
    shares = {}
    for rank in range(4):
        plan = RankPlan(
            index, ["detection", "segmentation"], batch_size=2, window=4, rank=rank, world_size=4, seed=7, epochs=1
        )
        shares[rank] = {t: _records(plan, t, 10_000) for t in ("detection", "segmentation")}
    for task, total in (("detection", 440), ("segmentation", 10)):
        per_rank = [shares[r][task] for r in range(4)]
        assert all(per_rank), task  # nobody is left without the task
        flat = [rec for share in per_rank for rec in share]
        assert len(flat) == len(set(flat)) == total  # disjoint, and together one full epoch
        assert max(map(len, per_rank)) - min(map(len, per_rank)) <= PIECE_ROWS


def test_too_few_records_for_the_ranks_is_a_named_error():
    index = _index({"classification": [100], "vqa": [2]})
    plan = RankPlan(index, ["classification", "vqa"], batch_size=1, window=1, rank=2, world_size=3)
    with pytest.raises(NoRecordsForRankError, match="'vqa' has 2 training records, fewer than the 3 workers"):
        plan.next_batch("vqa")
    with pytest.raises(NoRecordsForRankError, match="no training records for mlm"):
        RankPlan(index, ["classification", "mlm"], batch_size=1, window=1)


def test_batches_mix_shards_and_sources():
    """Shards written source after source: a batch draws from several pieces and files, unlike file order."""
    index = _index({"classification": [PIECE_ROWS] * 20})  # each file one "class folder"
    plan = RankPlan(index, ["classification"], batch_size=16, window=256, seed=1, epochs=1)
    files_per_batch, where = [], {}
    for _ in range(40):
        records = _records(plan, "classification", 1, where)
        if not records:
            break
        files_per_batch.append(len({f for f, _, _ in records}))
    # i.i.d. draws over 20 equal files give ~11 distinct files in 16 rows; the window holds 5-6 files.
    assert np.median(files_per_batch) >= 4


def test_epochs_reshuffle_and_plans_are_reproducible():
    index = _index({"mlm": [100, 60]})

    def run(seed):
        plan = RankPlan(index, ["mlm"], batch_size=8, window=16, seed=seed, epochs=2)
        return _records(plan, "mlm", 10_000)

    first = run(3)
    assert first == run(3) and first != run(4)
    assert Counter(first) == {rec: 2 for rec in set(first)} and len(set(first)) == 160
    assert first[:160] != first[160:]


def test_a_replayed_plan_reads_only_the_waiting_rows():
    """Replaying to step k plans the same later batches; what must be read again is only what the window held."""
    index = _index({"detection": [300], "vqa": [200]})
    order = ["detection", "vqa", "vqa"] * 30

    def plan_():
        return RankPlan(index, ["detection", "vqa"], batch_size=4, window=32, seed=5, rank=1, world_size=2)

    straight = plan_()
    batches = [straight.next_batch(t) for t in order]
    replayed = plan_()
    for task in order[:45]:
        replayed.next_batch(task)
    waiting = replayed.waiting_rows(replayed.take_pending())
    later = [replayed.next_batch(t) for t in order[45:]]
    assert later == batches[45:]
    waiting_keys = {int(k) for u in waiting for k in u.keys}
    new_keys = {int(k) for u in replayed.take_pending() for k in u.keys}
    needed = {k for b in later for k in b}
    assert needed <= waiting_keys | new_keys
    assert len(waiting_keys) <= 2 * (32 + 4 + PIECE_ROWS)  # a window per task, not the 180 rows already served


def test_shard_index_reads_task_columns_and_names_unreadable_shards(tmp_path):
    from pyarrow import fs as pafs

    rows = [{"id": f"r{i}", "tasks": ["detection"] + (["vqa"] if i % 3 == 0 else [])} for i in range(150)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet", row_group_size=PIECE_ROWS)
    (tmp_path / "b.parquet").write_bytes(b"not parquet")
    index = build_shard_index(
        [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")], pafs.LocalFileSystem(), backoff_s=0
    )
    assert index.paths == [str(tmp_path / "a.parquet")] and list(index.bad) == [str(tmp_path / "b.parquet")]
    assert index.records("detection") == 150 and index.records("vqa") == 50 and index.tasks() == ["detection", "vqa"]
    assert [len(rows) for _, _, rows in index.pieces["detection"]] == [64, 64, 22]
    assert [int(r) for _, rg, rows in index.pieces["vqa"] if rg == 0 for r in rows] == list(range(0, 64, 3))


def test_a_rank_keeps_its_pieces_every_epoch_in_a_new_order():
    """Pieces are dealt once per run (a node can cache its share); each epoch reads them in a new order."""
    index = _index({"classification": [PIECE_ROWS] * 9 + [30]})
    epochs = 3
    shares = []
    for rank in range(2):
        plan = RankPlan(
            index, ["classification"], batch_size=4, window=8, rank=rank, world_size=2, seed=11, epochs=epochs
        )
        read = [[] for _ in range(epochs)]  # per epoch: the rows read, in reading order
        while plan.next_batch("classification") is not None:
            for unit in plan.take_pending():
                read[unit.epoch].extend((unit.file, int(r)) for r in unit.rows)
        assert len({frozenset(rows) for rows in read}) == 1  # the same records every epoch
        assert len({tuple(rows) for rows in read}) == epochs  # in a different order each time
        shares.append(set(read[0]))
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == 9 * PIECE_ROWS + 30


def test_ranks_shares_differ_by_at_most_one_piece_when_pieces_differ_in_size():
    """Row groups of 64 and 8 rows of a task (a shard's short last row group): shares still within one piece."""
    index = _index({"detection": [PIECE_ROWS + 8] * 64})
    world = 8
    shares = [
        sum(
            len(rows)
            for _, _, rows in RankPlan(
                index, ["detection"], batch_size=4, window=8, rank=rank, world_size=world, seed=3
            ).rank_pieces("detection", 0)
        )
        for rank in range(world)
    ]
    assert sum(shares) == 64 * (PIECE_ROWS + 8)
    assert max(shares) - min(shares) <= PIECE_ROWS
