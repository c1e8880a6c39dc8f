"""How well the training stream mixes a split: distinct classes per batch, against i.i.d. draws.

Why: a batch of one or two classes gives the classification head a gradient toward those
classes only; on PBC the old stream (shards read in order through a 128-row local buffer)
kept classification at chance where the same steps on shuffled order learned. The stream's
order comes from its read plan (``unihema.data.plan.RankPlan``), which is pure: this script
runs the real plan over a converted dataset's train shards, looks up each planned record's
class, and compares three orders at the same batch size:

- ``plan``: the rank's read plan (pieces dealt per epoch, a shuffle window per task);
- ``iid``: batches drawn uniformly with replacement from the split (the ideal);
- ``file_order``: records in shard order, no shuffling (what a stream without a global
  shuffle approaches when shards are written source after source).

    python -m data_prep convert pbc_wbcatt --src ../shared/datasets/pbc_wbcatt --out /tmp/pbc
    python benchmarks/shuffle_bench.py /tmp/pbc                  # classification, batch 16
    python benchmarks/shuffle_bench.py /tmp/pbc --task morphology --batch 8 --world 4
    python benchmarks/shuffle_bench.py /tmp/pbc --sort-by-class     # shards written class after class

``--sort-by-class`` first copies the train split into shards sorted by class (the layout of
a source converted folder by folder, or of sources one after another) and measures that.
Nothing is decoded and Ray is not started: only the ``tasks`` and ``cell_class`` columns are read.
Writes ``benchmarks/results/shuffle-<dataset folder>-<task>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unihema.config import StorageConfig, load_config  # noqa: E402
from unihema.data.plan import RankPlan, build_shard_index  # noqa: E402
from unihema.data.shards import list_shards  # noqa: E402
from unihema.storage import open_filesystem, parse_uri  # noqa: E402


def class_table(index, fs) -> dict[int, list]:
    """file number -> the cell_class of each row of the file, in file order."""
    out = {}
    for file_no, path in enumerate(index.paths):
        with fs.open_input_file(path) as f:
            out[file_no] = pq.ParquetFile(f).read(columns=["cell_class"]).column("cell_class").to_pylist()
    return out


def _row_offsets(index, fs) -> dict[tuple[int, int], int]:
    """(file, row group) -> offset of the row group's first row in its file."""
    offsets = {}
    for file_no, path in enumerate(index.paths):
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
        start = 0
        for rg in range(meta.num_row_groups):
            offsets[file_no, rg] = start
            start += meta.row_group(rg).num_rows
    return offsets


def sorted_copy(data: str, out: Path) -> str:
    """The train split rewritten class after class, in row groups of the stream's piece size."""
    from unihema.data.plan import PIECE_ROWS

    tables = [pq.read_table(p) for p in list_shards(data, "train")]
    table = pa.concat_tables(tables)
    order = sorted(range(table.num_rows), key=lambda i: str(table.column("cell_class")[i].as_py()))
    (out / "split=train").mkdir(parents=True, exist_ok=True)
    pq.write_table(table.take(order), out / "split=train" / "sorted-00000.parquet", row_group_size=PIECE_ROWS)
    return str(out)


def distinct_per_batch(batches: list[list]) -> float:
    return float(np.mean([len(set(b)) for b in batches]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a converted dataset or corpus (local folder or s3://)")
    parser.add_argument("--task", default="classification")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--world", type=int, default=1, help="ranks; the plan of rank 0 is measured")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--preset", default="demo", help="the preset whose data.shuffle_buffer is used")
    parser.add_argument("--window", type=int, default=None, help="data.shuffle_buffer instead of the preset's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sort-by-class", action="store_true", help="measure a class-sorted copy of the split")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    source = args.data
    if args.sort_by_class:
        import tempfile

        args.data = sorted_copy(args.data, Path(tempfile.mkdtemp(prefix="shuffle-bench-")) / "sorted")

    storage = StorageConfig()
    cfg = load_config(
        args.preset,
        overrides=[
            f"data.uri={args.data}",
            *([f"data.shuffle_buffer={args.window}"] if args.window is not None else []),
        ],
    )
    fs, _ = open_filesystem(parse_uri(args.data), storage)
    index = build_shard_index(list_shards(args.data, "train", storage), fs)
    classes = class_table(index, fs)
    offsets = _row_offsets(index, fs)

    plan = RankPlan(
        index,
        [args.task],
        batch_size=args.batch,
        window=cfg.data.shuffle_buffer,
        rank=0,
        world_size=args.world,
        seed=args.seed,
    )
    where: dict[int, str] = {}
    planned = []
    for _ in range(args.batches):
        keys = plan.next_batch(args.task)
        for unit in plan.take_pending():
            base = offsets[unit.file, unit.row_group]
            where.update({int(k): classes[unit.file][base + int(r)] for k, r in zip(unit.keys, unit.rows)})
        planned.append([where[k] for k in keys])

    # The task's records in shard order (the index lists pieces file by file, row group by row group).
    labels = [classes[f][offsets[f, rg] + int(r)] for f, rg, rows in index.pieces[args.task] for r in rows]
    rng = np.random.default_rng(args.seed)
    iid = [[labels[i] for i in rng.integers(0, len(labels), args.batch)] for _ in range(args.batches)]
    in_order = [labels[i : i + args.batch] for i in range(0, min(len(labels), args.batch * args.batches), args.batch)]
    counts = {c: labels.count(c) for c in sorted(set(labels), key=str)}
    result = {
        "command": "python benchmarks/shuffle_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": source,
        "sorted_by_class": args.sort_by_class,
        "task": args.task,
        "batch": args.batch,
        "world": args.world,
        "shuffle_buffer": cfg.data.shuffle_buffer,
        "train_records": len(labels),
        "shards": len(index.paths),
        "classes": counts,
        "distinct_classes_per_batch": {
            "plan": distinct_per_batch(planned),
            "iid": distinct_per_batch(iid),
            "file_order": distinct_per_batch(in_order),
        },
    }
    result["plan_vs_iid"] = result["distinct_classes_per_batch"]["plan"] / result["distinct_classes_per_batch"]["iid"]
    print(json.dumps(result, indent=1))
    out = (
        Path(args.out)
        if args.out
        else REPO
        / "benchmarks"
        / "results"
        / (f"shuffle-{Path(source.rstrip('/')).name}-{args.task}{'-sorted' if args.sort_by_class else ''}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
