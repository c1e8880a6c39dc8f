"""On resume, a node downloads a checkpoint once, verified, and its ranks share that copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from unihema.storage import open_filesystem
from unihema.storage.verify import StorageIntegrityError, write_file_manifest
from unihema.train.resume_cache import cache_dir_for, fetch_once, release

# What each "rank" runs: fetch the checkpoint through the node cache, say whether it downloaded.
_RANK = """
import json, sys
from unihema.config import StorageConfig
from unihema.storage import open_filesystem
from unihema.train.resume_cache import fetch_once
cfg = StorageConfig(**json.loads(sys.argv[1]))
fs, path = open_filesystem(sys.argv[2], cfg)
copy = fetch_once(fs, path, base=sys.argv[3])
print(json.dumps({"path": str(copy.path), "downloaded": copy.downloaded}))
"""


def _upload_checkpoint(embedded_s3, local, uri):
    (local / "checkpoint").mkdir(parents=True)
    (local / "checkpoint" / "mp_rank_00_model_states.pt").write_bytes(b"w" * 200_000)
    (local / "data_state_rank0.json").write_text(json.dumps({"step": 4, "positions": {}}))
    write_file_manifest(local, 0)
    fs, root = open_filesystem(uri, embedded_s3.storage_config())
    pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return fs, root


def test_local_checkpoint_is_used_in_place(tmp_path):
    """A checkpoint on local disk is neither copied nor removed."""
    copy = fetch_once(pafs.LocalFileSystem(), str(tmp_path))
    assert copy.path == tmp_path and not copy.downloaded and not copy.owned
    release(copy, local_rank=0)
    assert tmp_path.is_dir()


@pytest.mark.slow
def test_ranks_of_a_node_download_once(embedded_s3, tmp_path, subprocess_env):
    """Three processes resuming at once: one downloads, all read the same verified folder; rank 0 removes it."""
    uri = "s3://unihema/resume-cache/run/checkpoint_000"
    fs, root = _upload_checkpoint(embedded_s3, tmp_path / "written", uri)
    cfg = embedded_s3.storage_config()
    settings = json.dumps(
        {k: getattr(cfg, k) for k in ("endpoint_url", "access_key_id", "secret_access_key", "region")}
    )
    base = tmp_path / "node-tmp"
    base.mkdir()
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", _RANK, settings, uri, str(base)],
            env=subprocess_env,
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for proc in ranks:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["downloaded"] for r in results) == 1
    assert len({r["path"] for r in results}) == 1
    folder = cache_dir_for(fs, root, base)
    assert results[0]["path"] == str(folder)
    assert (folder / "checkpoint" / "mp_rank_00_model_states.pt").read_bytes() == b"w" * 200_000
    copy = fetch_once(fs, root, base=base)  # a retry on this node finds it complete
    assert not copy.downloaded
    release(copy, local_rank=1)
    assert folder.is_dir()
    release(copy, local_rank=0)
    assert not folder.exists()


@pytest.mark.slow
def test_damaged_checkpoint_is_not_resumed_from(embedded_s3, tmp_path):
    """A stored file changed after it was written (same size) stops the resume, naming it; no copy is kept."""
    uri = "s3://unihema/resume-cache/damaged/checkpoint_000"
    fs, root = _upload_checkpoint(embedded_s3, tmp_path / "written", uri)
    embedded_s3.client().put_object(
        Bucket="unihema",
        Body=b"x" * 200_000,
        Key="resume-cache/damaged/checkpoint_000/checkpoint/mp_rank_00_model_states.pt",
    )
    with pytest.raises(StorageIntegrityError, match="checksum mismatch.*mp_rank_00_model_states.pt"):
        fetch_once(fs, root, base=tmp_path)
    assert not cache_dir_for(fs, root, tmp_path).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("unihema-resume-")] == [
        cache_dir_for(fs, root, tmp_path).name + ".lock"
    ]  # nor a partial download
