"""Ray Data task streams from the embedded S3: batches, determinism, sharding, bad input."""

import io
from collections import Counter

import pyarrow.parquet as pq
import pytest
import torch

from unihema.config import load_config
from unihema.data.shards import list_shards
from unihema.data.stream import MultiTaskStream, TaskStream, local_task_batches
from unihema.storage import open_filesystem

pytestmark = pytest.mark.slow


@pytest.fixture()
def cfg(synthetic_uri):
    return load_config("tiny", overrides=[f"data.uri={synthetic_uri}", "data.batch_size=3"])


def _ids(stream, n):
    return [i for _, b in zip(range(n), stream) for i in b["ids"]]


@pytest.mark.parametrize("task", ["detection", "classification", "segmentation", "morphology", "vqa", "mlm"])
def test_task_batches_follow_the_model_contract(task, cfg, embedded_s3, local_ray):
    """Each task's stream yields normalized padded images, targets and tokenized text."""
    batch = next(TaskStream(task, cfg, embedded_s3.storage_config()))
    n = len(batch["ids"])
    assert batch["tasks"] == [task] and batch["images"].shape[:2] == (n, 3)
    assert batch["pixel_mask"].shape == (n, *batch["images"].shape[2:]) and batch["pixel_mask"].dtype == torch.bool
    assert batch["images"].abs().max() < 5  # ImageNet-normalized, not raw 0..255
    assert batch["prompt_ids"].shape == (n, cfg.model.text.max_length)
    for target in batch["targets"]:
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 1)).all()
        assert target["labels"].shape[0] == target["boxes"].shape[0] == target["morphology"].shape[0]
    if task in ("vqa", "mlm"):
        assert (batch["text_labels"] != -100).any(dim=1).all() and batch["text_task"] == [task] * n
    if task == "classification":
        assert (batch["cell_labels"] >= 0).all()
    if task == "detection":
        assert all(len(t["labels"]) for t in batch["targets"])


def test_same_seed_and_epoch_give_same_batches(cfg, embedded_s3, local_ray):
    """Two streams with the same seed produce identical batches; another seed reorders them."""
    storage = embedded_s3.storage_config()
    first = next(TaskStream("classification", cfg, storage, seed=5))
    second = next(TaskStream("classification", cfg, storage, seed=5))
    assert first["ids"] == second["ids"] and torch.equal(first["images"], second["images"])
    orders = {tuple(_ids(TaskStream("classification", cfg, storage, seed=s, endless=False), 100)) for s in (5, 6, 7)}
    assert len(orders) > 1


def test_epochs_are_reshuffled_and_counted(cfg, embedded_s3, local_ray):
    """Each epoch passes every record of the task once, in a new order."""
    stream = MultiTaskStream(cfg, embedded_s3.storage_config(), tasks={"mlm": 1.0}, epochs=2, seed=1)
    ids = [i for _, b in stream for i in b["ids"]]
    assert Counter(ids) == {i: 2 for i in set(ids)}
    half = len(ids) // 2
    assert ids[:half] != ids[half:]  # the second epoch is dealt and drawn in another order
    assert stream.plan.epoch_of("mlm") == 1


def test_ranks_see_disjoint_shares(cfg, embedded_s3, local_ray):
    """Two ranks of one job get disjoint records that together cover the split."""
    storage = embedded_s3.storage_config()
    shares = [set(_ids(TaskStream("vqa", cfg, storage, rank=r, world_size=2, endless=False), 100)) for r in range(2)]
    whole = set(_ids(TaskStream("vqa", cfg, storage, endless=False), 100))
    assert shares[0] and shares[1] and not shares[0] & shares[1] and shares[0] | shares[1] == whole


def test_local_batches_match_the_ray_stream(cfg, embedded_s3, local_ray):
    """Validation's in-process reader yields the same records as the Ray Data stream."""
    storage = embedded_s3.storage_config()
    local = {i for b in local_task_batches("segmentation", "train", cfg, storage) for i in b["ids"]}
    ray_ids = set(_ids(TaskStream("segmentation", cfg, storage, endless=False), 100))
    assert local == ray_ids


def test_task_mix_follows_weights_and_is_reproducible(cfg, embedded_s3, local_ray):
    """Schedule "sampled": task choice per step follows the weights, identically for every rank and run."""
    from dataclasses import replace

    storage = embedded_s3.storage_config()
    only_two = replace(
        cfg,
        train=replace(cfg.train, task_schedule="sampled"),
        data=replace(
            cfg.data, mix=replace(cfg.data.mix, detection=0.0, segmentation=0.0, morphology=0.0, vqa=0.0, mlm=3.0)
        ),
    )
    stream = MultiTaskStream(only_two, storage, seed=2)
    tasks = [stream.task_for_step(s) for s in range(400)]
    assert set(tasks) == {"classification", "mlm"} and 0.65 < tasks.count("mlm") / 400 < 0.85
    assert tasks == [MultiTaskStream(only_two, storage, seed=2).task_for_step(s) for s in range(400)]
    task, batch = next(stream)
    assert task == tasks[0] and batch["tasks"] == [task]


def test_all_task_schedule_visits_every_task_each_step(cfg, embedded_s3, local_ray):
    """Schedule "all": the micro-steps of one optimizer step are one batch of each task, in a fixed order."""
    from dataclasses import replace

    storage = embedded_s3.storage_config()
    every = replace(
        cfg,
        train=replace(cfg.train, task_schedule="all"),
        data=replace(cfg.data, mix=replace(cfg.data.mix, detection=0.0, vqa=5.0)),
    )
    stream = MultiTaskStream(every, storage, seed=2)
    names = list(stream.weights)
    assert "detection" not in names and every.train.micro_steps(len(names)) == len(names)
    steps = [[stream.task_for_step(step * len(names) + k) for k in range(len(names))] for step in range(5)]
    assert all(s == names for s in steps)  # weights do not change how often a task trains
    assert [next(stream)[0] for _ in names] == names


def test_bad_records_and_unreadable_shards_are_counted(cfg, embedded_s3, local_ray, tmp_path):
    """A corrupt image is skipped and counted by reason; an unreadable shard is reported by name."""
    storage = embedded_s3.storage_config()
    uri = "s3://unihema/pipeline-bad"
    fs, root = open_filesystem(uri, storage)
    good_files = list_shards(cfg.data.uri, "train", storage)
    table = pq.read_table(good_files[0], filesystem=fs)
    rows = table.to_pylist()[:6]
    rows[0]["image"] = b"\x89PNG\r\n\x1a\n not really"
    with fs.open_output_stream(f"{root}/split=train/part-00000.parquet") as out:
        sink = io.BytesIO()
        pq.write_table(table.from_pylist(rows, schema=table.schema), sink)
        out.write(sink.getvalue())
    with fs.open_output_stream(f"{root}/split=train/part-00001.parquet") as out:
        out.write(b"this is not parquet")
    bad_cfg = load_config("tiny", overrides=[f"data.uri={uri}", "data.batch_size=2"])
    tasks_of = {r["id"]: r["tasks"] for r in rows}
    task = next(t for t in rows[0]["tasks"])
    stream = TaskStream(task, bad_cfg, storage, endless=False)
    ids = [i for b in stream for i in b["ids"]]
    assert rows[0]["id"] not in ids and set(ids) == {i for i, t in tasks_of.items() if task in t} - {rows[0]["id"]}
    assert stream.stats.errors == {"undecodable_image": 1}
    assert list(stream.stats.bad_shards) == [f"{root}/split=train/part-00001.parquet"]


def test_round_robin_gives_every_task_its_exact_share_and_resumes(cfg, embedded_s3, local_ray):
    """Schedule "round_robin": each task's step count stays within one of its share, and a
    stream resumed at step k continues the same order with the same per-task counts."""
    from dataclasses import replace

    storage = embedded_s3.storage_config()
    mixed = replace(
        cfg,
        train=replace(cfg.train, task_schedule="round_robin"),
        data=replace(
            cfg.data,
            mix=replace(
                cfg.data.mix, detection=1.0, classification=4.0, segmentation=1.5, morphology=1.0, vqa=1.25, mlm=0.5
            ),
        ),
    )
    stream = MultiTaskStream(mixed, storage, seed=2)
    total = sum(stream.weights.values())
    order = [stream.task_for_step(s) for s in range(250)]
    for n in (10, 50, 250):
        counts = {t: order[:n].count(t) for t in stream.weights}
        for task, weight in stream.weights.items():
            assert abs(counts[task] - n * weight / total) < 1.0 + 1e-9, (n, task, counts)
    resumed = MultiTaskStream(mixed, storage, seed=2, start_step=100)
    assert resumed.task_steps == {t: order[:100].count(t) for t in stream.weights if order[:100].count(t)}
    task, batch = next(resumed)
    assert task == order[100] and batch["tasks"] == [task] and resumed.task_steps[task] == order[:101].count(task)
    assert [resumed.task_for_step(s) for s in range(101, 250)] == order[101:]


def test_a_resumed_stream_gives_the_same_batches_and_first_reads_what_its_first_batch_needs(
    cfg, embedded_s3, local_ray
):
    """A stream resumed at step k yields the uninterrupted stream's batches from k on, pixel for pixel;
    before its first batch it reads only the pieces holding that batch's rows."""
    storage = embedded_s3.storage_config()
    with MultiTaskStream(cfg, storage, seed=3) as straight:
        expected = [next(straight) for _ in range(24)]
    with MultiTaskStream(cfg, storage, seed=3, start_step=16) as resumed:
        first_task = resumed.task_for_step(16)
        first_keys = set(resumed._planned[first_task][0])
        first_reads = resumed.resume_first_reads
        assert resumed.resume_reads and 0 < len(first_reads) <= cfg.data.batch_size
        assert all(first_keys & {int(k) for k in u.keys} for u in first_reads)
        assert first_keys <= {int(k) for u in first_reads for k in u.keys}
        got = [next(resumed) for _ in range(8)]
    for (task, batch), (want_task, want) in zip(got, expected[16:]):
        assert task == want_task and batch["ids"] == want["ids"]
        assert torch.equal(batch["images"], want["images"])
