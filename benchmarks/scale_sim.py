"""The input path at corpus scale: a 700K-record corpus of 46 sources, read as 2 to 64 ranks.

Why: the largest thing the stream had read was 20K synthetic records on 2 workers, while the
mission is ~700K images from 46 sources in ~1,000 shards on tens of GPUs. This writes a
corpus shaped like the real one into the embedded S3 server and drives the training stream
(``unihema.data.stream.MultiTaskStream``, without the model) through it:

- the corpus: one dataset folder per source of ``data_prep``'s registry, with that source's
  tasks, written by ``ShardWriter`` (row groups of ``PIECE_ROWS``) as ``data_prep`` writes
  them, ``--records-per-shard`` records per shard (700 ~ 64 MiB of ~95 KB images, so ~1,000
  shards at 700K). The registry holds no sizes, so source sizes follow a Zipf law over a
  seeded order of the sources, and for every task its smallest source is cut to a tiny one.
  Images are small (``--image-size``) synthetic smears so it fits this machine; records
  have the real schema and every field of their tasks.
- the shard index the driver builds, on 100 shards and on all of them;
- every rank's read plan for one epoch at N = 2, 8, 32, 64 (pure functions of the index:
  what each rank gets of each task, with no reading);
- the real stream of sampled ranks (time to first batch), one rank's whole share of an
  epoch at ``--memory-world`` ranks with its process tree's memory sampled each second
  (images/s per decode CPU, memory flat or not), and a resume at record 500K (scaled with
  ``--records``): rows and bytes read before its first batch, and those of the shuffle
  windows read again over the first steps.

Targets (issue 22): time to first batch grows less than linearly with shard count (100 vs
1,000); every rank receives every task at N = 64 within 10% of its configured share;
memory after the first tenth of the epoch stays within 10% of its level then; a resume at
record 500K reads less than 1% of the corpus before its first batch.

    python benchmarks/scale_sim.py                        # 700K records (12-17 min on 2 cores)
    python benchmarks/scale_sim.py --records 3000 --ranks 2,4 --records-per-shard 100  # smoke

Writes ``benchmarks/results/scale-sim-<records>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from data_bench import TreeMemory, decile_trace  # noqa: E402

from unihema.config import (  # noqa: E402
    TASKS,
    StorageConfig,  # noqa: E402
    load_config,
)
from unihema.data.plan import RankPlan, build_shard_index  # noqa: E402
from unihema.data.stream import WeightedRoundRobin, task_weights  # noqa: E402
from unihema.storage import EmbeddedS3, open_filesystem, parse_uri  # noqa: E402

CORPUS_RECORDS = 700_000
RESUME_RECORD = 500_000
SMALL_SHARDS = 100


# --------------------------------------------------------------------------- the corpus
def source_sizes(records: int, seed: int, tiny: int) -> dict[str, tuple[int, tuple[str, ...]]]:
    """source -> (records, tasks): Zipf sizes over a seeded order; each task's smallest source made tiny."""
    from data_prep.registry import registry

    specs = sorted(registry().values(), key=lambda s: s.name)
    order = np.random.default_rng(seed).permutation(len(specs))
    weights = 1.0 / (np.arange(len(specs)) + 1.0)
    sizes = {specs[i].name: w for i, w in zip(order, weights)}
    total = sum(sizes.values())
    out = {s.name: [max(tiny, int(records * sizes[s.name] / total)), s.tasks] for s in specs}
    for task in TASKS:
        holders = [name for name, (_, tasks) in out.items() if task in tasks]
        if holders:
            out[min(holders, key=lambda n: out[n][0])][0] = tiny
    return {name: (n, tuple(tasks)) for name, (n, tasks) in out.items()}


def templates(image_size: int, count: int = 48) -> list[dict]:
    """Synthetic records of both kinds (fields of view, cell crops) to copy into every source."""
    from unihema.data.synthetic.record import generate_record

    out = [generate_record(i, 0, image_size, kind="fov" if i % 2 else "crop") for i in range(count)]
    return [dict(r, split="train") for r in out]


def write_corpus(uri: str, storage: StorageConfig, sizes: dict, image_size: int, per_shard: int) -> dict:
    """Every source as its own dataset folder under ``uri``, train split only; returns write statistics."""
    from unihema.data.shards import ShardWriter, write_manifest

    pool = templates(image_size)
    started, written, rejected = time.perf_counter(), 0, 0
    for source, (n, tasks) in sizes.items():
        usable = [(t, [x for x in t["tasks"] if x in tasks]) for t in pool]
        usable = [(t, kept) for t, kept in usable if kept]
        writer = ShardWriter(
            f"{uri}/{source}",
            storage,
            tag=source,
            target_shard_bytes=1 << 40,
            max_records_per_shard=per_shard,
            check_images=False,
        )
        for i in range(n):
            template, kept = usable[i % len(usable)]
            ok = writer.write(
                dict(template, id=f"{source}-{i:07d}", source=source, tasks=kept, origin=f"scale_sim {source} {i}")
            )
            written, rejected = written + ok, rejected + (not ok)
        stats = writer.close()
        write_manifest(f"{uri}/{source}", stats, storage, dataset=source)
    return {"records": written, "rejected": rejected, "seconds": time.perf_counter() - started}


# --------------------------------------------------------------------------- measurements
def index_times(uri: str, storage: StorageConfig) -> tuple[object, dict]:
    """The shard index the driver builds, timed on SMALL_SHARDS evenly spaced shards and on all."""
    from unihema.data.shards import list_shards

    fs, _ = open_filesystem(parse_uri(uri), storage)
    paths = list_shards(uri, "train", storage)
    small = paths[:: max(1, len(paths) // SMALL_SHARDS)][:SMALL_SHARDS]
    row = {}
    for name, chosen in (("small", small), ("all", paths)):
        start = time.perf_counter()
        index = build_shard_index(chosen, fs)
        row[name] = {"shards": len(chosen), "seconds": time.perf_counter() - start}
    row["corpus_bytes"] = sum(info.size for info in fs.get_file_info(paths))
    return index, row


def plan_balance(index, cfg, world: int, seed: int) -> dict:
    """Every rank's plan for one epoch: images per task against the configured share, records dealt per task."""
    weights = task_weights(cfg)
    total = sum(weights.values())
    batch = cfg.data.batch_size
    records = sum(index.records(t) for t in weights)
    steps = max(1, records // (world * batch))
    robin = WeightedRoundRobin(weights)
    order = [robin.next() for _ in range(steps)]
    shares, missing = {t: [] for t in weights}, []
    dealt = {t: [] for t in weights}
    for rank in range(world):
        plan = RankPlan(
            index,
            list(weights),
            batch_size=batch,
            window=cfg.data.shuffle_buffer,
            rank=rank,
            world_size=world,
            seed=seed,
        )
        got = Counter()
        for task in order:
            got[task] += len(plan.next_batch(task))
        for task in weights:
            expected = steps * batch * weights[task] / total
            shares[task].append(got[task] / expected)
            dealt[task].append(sum(len(rows) for _, _, rows in plan.rank_pieces(task, 0)))
        missing += [(rank, t) for t in weights if not got[t]]
    return {
        "world": world,
        "steps": steps,
        "every_rank_every_task": not missing,
        "share_ratio_min": min(min(v) for v in shares.values()),
        "share_ratio_max": max(max(v) for v in shares.values()),
        "dealt_records": {
            t: {"min": min(v), "max": max(v), "ideal": index.records(t) / world} for t, v in dealt.items()
        },
    }


def stream_child(args) -> dict:
    """In a fresh process (its tree's memory sampled by the parent): first batches, one rank's epoch, a resume."""
    import ray

    from unihema.data.stream import MultiTaskStream

    storage = StorageConfig()
    cfg = load_config(args.preset, overrides=[f"data.uri={args.uri}", *_overrides(args)])
    ray.init(num_cpus=args.decode_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    index = build_shard_index(_paths(args.uri, storage), open_filesystem(parse_uri(args.uri), storage)[0])
    out: dict = {"first_batch_s": {}}
    for world in args.ranks:
        for rank in sorted({0, world // 2, world - 1}):
            start = time.perf_counter()
            with MultiTaskStream(cfg, storage, rank=rank, world_size=world, seed=0, index=index) as stream:
                next(stream)
            out["first_batch_s"][f"{world}:{rank}"] = time.perf_counter() - start

    world, batch = args.memory_world, cfg.data.batch_size
    steps = max(1, args.records // (world * batch))
    print(json.dumps({"mark": "epoch_start", "t": time.time()}), flush=True)
    start, images, first = time.perf_counter(), 0, None
    with MultiTaskStream(cfg, storage, rank=0, world_size=world, seed=0, index=index) as stream:
        for _ in range(steps):
            _, batch_ = next(stream)
            images += len(batch_["ids"])
            if first is None:
                first = time.perf_counter() - start
    seconds = time.perf_counter() - start
    print(json.dumps({"mark": "epoch_end", "t": time.time()}), flush=True)
    out["epoch"] = {
        "world": world,
        "rank": 0,
        "steps": steps,
        "images": images,
        "seconds": seconds,
        "first_batch_s": first,
        "images_per_s": images / seconds,
        "images_per_s_per_decode_cpu": images / seconds / args.decode_cpus,
        "task_images": dict(stream.stats.task_images),
    }

    world = args.ranks[-1]
    resume_record = int(RESUME_RECORD * args.records / CORPUS_RECORDS)
    step = resume_record // (world * batch)
    start = time.perf_counter()
    with MultiTaskStream(cfg, storage, rank=0, world_size=world, seed=0, index=index, start_step=step) as stream:
        replay_s = time.perf_counter() - start
        waiting, first = stream.resume_reads, stream.resume_first_reads
        next(stream)
        first_batch_s = time.perf_counter() - start
        # Until every task has had a batch: by then most of the window has been read again.
        for _ in range(len(stream.weights) - 1):
            next(stream)
        every_task_s = time.perf_counter() - start
    out["resume"] = {
        "world": world,
        "record": resume_record,
        "step": step,
        "replay_s": replay_s,
        "window_rows": cfg.data.shuffle_buffer,
        "batch_size": batch,
        "first_batch_s": first_batch_s,
        "one_batch_per_task_s": every_task_s,
        "rows_read_before_first_batch": sum(len(u.rows) for u in first),
        "bytes_read_before_first_batch_rank": _bytes_read(first, index, storage, args.uri),
        "rows_read_again": sum(len(u.rows) for u in waiting),
        "bytes_read_again_rank": _bytes_read(waiting, index, storage, args.uri),
    }
    ray.shutdown()
    return out


def _overrides(args) -> list[str]:
    # The project's own tokenizer, not the paper's FLAN-T5 (a hub download): the data cost is the same.
    return ["model.text.pretrained=scratch", "model.text.vocab_size=512", *args.overrides]


def _paths(uri: str, storage: StorageConfig) -> list[str]:
    from unihema.data.shards import list_shards

    return list_shards(uri, "train", storage)


def _bytes_read(units, index, storage: StorageConfig, uri: str) -> int:
    """Compressed bytes the units read: per task once per row group, the columns that task reads."""
    import pyarrow.parquet as pq

    from unihema.data.pipeline import read_columns

    fs, _ = open_filesystem(parse_uri(uri), storage)
    reads: dict[int, set[tuple[int, str]]] = {}
    for unit in units:
        reads.setdefault(unit.file, set()).add((unit.row_group, unit.task))
    total = 0
    for file_no, groups in reads.items():
        with fs.open_input_file(index.paths[file_no]) as f:
            meta = pq.ParquetFile(f).metadata
        names = [meta.schema.column(c).path.split(".")[0] for c in range(meta.num_columns)]
        for rg, task in groups:
            wanted = set(read_columns(task))
            group = meta.row_group(rg)
            total += sum(group.column(c).total_compressed_size for c in range(group.num_columns) if names[c] in wanted)
    return total


def run_stream_child(args, env: dict) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--uri",
        args.uri,
        "--records",
        str(args.records),
        "--ranks",
        ",".join(map(str, args.ranks)),
        "--memory-world",
        str(args.memory_world),
        "--decode-cpus",
        str(args.decode_cpus),
        "--preset",
        args.preset,
        *args.overrides,
    ]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    began = time.time()  # the sampler's clock starts now; the child marks its epoch in wall-clock time
    with TreeMemory(child.pid) as memory:
        out, err = child.communicate()
    if child.returncode:
        raise RuntimeError(f"stream measurement failed (exit {child.returncode}):\n{err[-3000:]}")
    lines = [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]
    marks = {m["mark"]: m["t"] for m in lines if "mark" in m}
    result = lines[-1]
    # Memory of the epoch alone (the first-batch probes before it start and stop streams).
    epoch = [(t, pss) for t, pss in memory.trace if marks["epoch_start"] <= began + t <= marks["epoch_end"]]
    epoch = [(t - epoch[0][0], pss) for t, pss in epoch] if epoch else []
    result["epoch"]["pss_mb_by_decile"] = decile_trace(epoch)
    if epoch:
        end = epoch[-1][0]
        tenth = [pss for t, pss in epoch if t <= end / 10]
        later = [pss for t, pss in epoch if t > end / 10]
        level = max(tenth) if tenth else 0
        result["epoch"]["pss_mb_at_first_tenth"] = level / 2**20
        result["epoch"]["pss_mb_max_after"] = max(later, default=level) / 2**20
    result["peak_pss_mb"] = memory.peak_pss / 2**20
    return result


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=CORPUS_RECORDS)
    parser.add_argument("--ranks", default="2,8,32,64", help="simulated world sizes, comma separated")
    parser.add_argument("--records-per-shard", type=int, default=700)
    parser.add_argument("--image-size", type=int, default=32, help="synthetic image size (pixels)")
    parser.add_argument(
        "--memory-world",
        type=int,
        default=64,
        help="world size whose rank 0 reads its whole share of an epoch under the memory sampler",
    )
    parser.add_argument("--decode-cpus", type=int, default=os.cpu_count() or 1, help="CPUs given to Ray")
    parser.add_argument(
        "--preset", default="paper", help="preset whose transforms, batch, shuffle window and task mix are used"
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.shuffle_buffer=512")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.ranks = sorted(int(r) for r in str(args.ranks).split(","))
    if args.child:
        print(json.dumps(stream_child(args)))
        return 0

    cfg = load_config(args.preset, overrides=_overrides(args))
    tiny = max(2 * args.ranks[-1], args.records // 5000)
    sizes = source_sizes(args.records, seed=0, tiny=tiny)
    report: dict = {"sources": {n: {"records": r, "tasks": list(t)} for n, (r, t) in sizes.items()}}
    with EmbeddedS3() as s3:
        storage = s3.storage_config()
        s3.create_bucket("scale")
        args.uri = "s3://scale/corpus"
        report["write"] = write_corpus(args.uri, storage, sizes, args.image_size, args.records_per_shard)
        print(f"wrote {report['write']['records']} records in {report['write']['seconds']:.0f}s", flush=True)
        index, report["index"] = index_times(args.uri, storage)
        print(f"index: {report['index']}", flush=True)
        report["plans"] = [plan_balance(index, cfg, world, seed=0) for world in args.ranks]
        for row in report["plans"]:
            print(
                f"plan N={row['world']}: every task {row['every_rank_every_task']}, share "
                f"{row['share_ratio_min']:.3f}-{row['share_ratio_max']:.3f}",
                flush=True,
            )
        report["stream"] = run_stream_child(args, {**os.environ, **s3.env()})

    report["summary"] = summarize(report)
    report.update(
        {
            "command": " ".join(["python", "benchmarks/scale_sim.py", *(argv if argv is not None else sys.argv[1:])]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        }
    )
    path = args.out or REPO / "benchmarks" / "results" / f"scale-sim-{args.records}.json"
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {path}")
    return 0


def summarize(report: dict) -> dict:
    index, stream = report["index"], report["stream"]
    largest = report["plans"][-1]
    resume = stream["resume"]
    corpus_bytes = index["corpus_bytes"]
    shard_ratio = index["all"]["shards"] / index["small"]["shards"]
    first_batch = max(stream["first_batch_s"].values())  # a worker never reads footers: the same for any shard count
    start_small, start_all = index["small"]["seconds"] + first_batch, index["all"]["seconds"] + first_batch
    epoch = stream["epoch"]
    level = epoch.get("pss_mb_at_first_tenth")
    growth = epoch["pss_mb_max_after"] / level if level else None
    deciles = epoch.get("pss_mb_by_decile") or []
    summary = {
        "shards": index["all"]["shards"],
        "index_seconds_small_vs_all": [index["small"]["seconds"], index["all"]["seconds"]],
        "start_to_first_batch_s_small_vs_all": [start_small, start_all],
        "shard_ratio": shard_ratio,
        "rank_first_batch_s_max": first_batch,
        "largest_world": largest["world"],
        "share_ratio_range_largest_world": [largest["share_ratio_min"], largest["share_ratio_max"]],
        "dealt_records_spread_largest_world": {
            t: [v["min"] / v["ideal"], v["max"] / v["ideal"]] for t, v in largest["dealt_records"].items()
        },
        "epoch_images_per_s_per_decode_cpu": epoch["images_per_s_per_decode_cpu"],
        "memory_growth_after_first_tenth": growth,
        "memory_growth_from_second_tenth": max(deciles[1:]) / deciles[1] if len(deciles) > 1 and deciles[1] else None,
        "resume_first_batch_s": resume["first_batch_s"],
        "resume_fraction_of_corpus_before_first_batch_one_rank": resume["bytes_read_before_first_batch_rank"]
        / corpus_bytes,
        "resume_fraction_of_corpus_before_first_batch_all_ranks": resume["bytes_read_before_first_batch_rank"]
        * resume["world"]
        / corpus_bytes,
        # The windows' rows, read again over the first steps: the price of not checkpointing the windows.
        "resume_fraction_of_corpus_read_again_one_rank": resume["bytes_read_again_rank"] / corpus_bytes,
        "resume_fraction_of_corpus_read_again_all_ranks": resume["bytes_read_again_rank"]
        * resume["world"]
        / corpus_bytes,
    }
    summary["targets"] = {
        "time to first batch grows less than linearly with shards": start_all / start_small < shard_ratio,
        "every rank every task within 10% of its share at the largest world": largest["every_rank_every_task"]
        and 0.9 <= largest["share_ratio_min"]
        and largest["share_ratio_max"] <= 1.1,
        "memory within 10% after the first tenth": growth is not None and growth <= 1.10,
        "resume reads < 1% of the corpus before its first batch (one rank)": summary[
            "resume_fraction_of_corpus_before_first_batch_one_rank"
        ]
        < 0.01,
        "resume reads < 1% of the corpus before its first batch (all ranks)": summary[
            "resume_fraction_of_corpus_before_first_batch_all_ranks"
        ]
        < 0.01,
    }
    return summary


if __name__ == "__main__":
    sys.exit(main())
