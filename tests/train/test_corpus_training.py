"""Training on a corpus of two real datasets converted separately, as a user assembles one.

BCCD (detection, field VQA/MLM) and PBC (classification, morphology, cell VQA/MLM) are
converted by ``data_prep`` into their own folders of one corpus, so every task lives in the
shards of one or two sources only, and detection in fewer shards than there are workers.
Each of the 2 workers must still train every task (before the read plan, a rank without
shards of a task failed on its first step, and the restart failed the same way).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unihema.data.plan import build_shard_index
from unihema.data.shards import list_shards, read_manifest
from unihema.storage import open_filesystem, parse_uri

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]
REPO = Path(__file__).resolve().parents[2]
WORKERS = 2


@pytest.fixture(scope="module")
def corpus(shared_datasets, subprocess_env, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    for registry, name in (("bccd", "bccd"), ("pbc_wbcatt", "pbc")):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "data_prep",
                "convert",
                registry,
                "--src",
                str(shared_datasets / registry),
                "--out",
                str(root / name),
                "--no-progress",
            ],
            cwd=REPO,
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root


def test_a_corpus_reads_as_one_dataset(corpus):
    """Its manifest is its datasets' merged and its shards are theirs; each task sits in few shards."""
    manifest = read_manifest(str(corpus))
    parts = {name: read_manifest(str(corpus / name)) for name in ("bccd", "pbc")}
    assert set(manifest["corpus"]) == {"bccd", "pbc"}
    assert manifest["records"] == sum(p["records"] for p in parts.values())
    assert manifest["counts"]["task"]["detection"] == parts["bccd"]["counts"]["task"]["detection"]
    assert manifest["counts"]["task"]["classification"] == parts["pbc"]["counts"]["task"]["classification"]
    shards = list_shards(str(corpus), "train")
    assert {Path(p).parts[-3] for p in shards} == {"bccd", "pbc"}
    fs, _ = open_filesystem(parse_uri(str(corpus)), None)
    index = build_shard_index(shards, fs)
    files_of = {t: {f for f, _, _ in index.pieces[t]} for t in index.tasks()}
    assert len(files_of["detection"]) < WORKERS  # the layout that left ranks without a task
    assert files_of["vqa"] > files_of["detection"] and files_of["vqa"] > files_of["classification"]


def test_every_rank_trains_every_task_of_the_corpus(corpus, start_cli, tmp_path):
    runs, log = tmp_path / "runs", tmp_path / "train.log"
    steps = 10
    proc = start_cli(
        "unihema.pretrain",
        [
            "--preset",
            "tiny",
            f"data.uri={corpus}",
            f"storage.run_uri={runs}",
            "run_name=corpus",
            f"train.num_workers={WORKERS}",
            f"train.max_steps={steps}",
            f"train.checkpoint_every={steps}",
            f"train.val_every={steps}",
            "train.val_batches=1",
            "train.log_every=5",
            "data.mix.segmentation=0",
            "train.task_schedule=round_robin",
        ],
        log,
    )
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    status = json.loads((runs / "corpus" / "status.json").read_text())
    tasks = {"detection", "classification", "morphology", "vqa", "mlm"}
    assert status["status"] == "completed" and set(status["task_steps"]) == tasks
    per_rank = status["rank_task_images"]
    assert len(per_rank) == WORKERS
    for rank, images in enumerate(per_rank):
        assert set(images) == tasks and all(n > 0 for n in images.values()), (rank, images)
