"""Uploads and downloads are checked: a missing, short or changed file is an error naming it."""

from __future__ import annotations

import json

import pytest

from unihema.storage import open_filesystem
from unihema.storage.verify import (
    StorageIntegrityError,
    verify_local_checkpoint,
    verify_stored_checkpoint,
    verify_upload,
    write_file_manifest,
)


def _checkpoint_dir(root, rank=0):
    """A folder laid out like one rank's checkpoint, with that rank's manifest."""
    (root / "checkpoint").mkdir(parents=True, exist_ok=True)
    (root / "checkpoint" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(bytes(range(256)) * 40)
    (root / f"data_state_rank{rank}.json").write_text(json.dumps({"step": 3}))
    write_file_manifest(root, rank)
    return root


def test_local_copy_with_a_changed_byte_is_refused(tmp_path):
    """Same size, one byte changed: the sha256 check names the file."""
    ckpt = _checkpoint_dir(tmp_path / "ckpt")
    assert verify_local_checkpoint(ckpt) == 2
    target = ckpt / "checkpoint" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(StorageIntegrityError, match="checksum mismatch.*zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        verify_local_checkpoint(ckpt)


def test_checkpoint_without_manifest_is_not_checked(tmp_path):
    """Checkpoints written before manifests load as before (nothing to check against)."""
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "latest").write_text("checkpoint")
    assert verify_local_checkpoint(tmp_path / "old") == 0


@pytest.mark.slow
def test_stored_checkpoint_is_checked_against_every_ranks_manifest(embedded_s3, tmp_path):
    """Two ranks' folders merged on S3 pass; with one rank's file gone or cut short, the error names it."""
    import pyarrow.fs as pafs

    cfg = embedded_s3.storage_config()
    fs, root = open_filesystem("s3://unihema/verify/checkpoint_000", cfg)
    for rank in (0, 1):
        local = _checkpoint_dir(tmp_path / f"rank{rank}", rank)
        pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    assert verify_stored_checkpoint(fs, root, "ckpt") == 4
    client = embedded_s3.client()
    key = "verify/checkpoint_000/checkpoint/zero_pp_rank_1_mp_rank_00_optim_states.pt"
    client.put_object(Bucket="unihema", Key=key, Body=b"cut short")
    client.delete_object(Bucket="unihema", Key="verify/checkpoint_000/data_state_rank0.json")
    with pytest.raises(StorageIntegrityError) as info:
        verify_stored_checkpoint(fs, root, "s3://unihema/verify/checkpoint_000")
    message = str(info.value)
    assert "missing data_state_rank0.json" in message
    assert "zero_pp_rank_1_mp_rank_00_optim_states.pt (9 bytes, expected 10240)" in message


@pytest.mark.slow
def test_uploaded_folder_is_checked(embedded_s3, tmp_path):
    """upload_dir(verify=True) passes for a complete upload; a file replaced afterwards by a shorter one is named."""
    from unihema.train.run_files import upload_dir

    cfg = embedded_s3.storage_config()
    local = tmp_path / "export"
    (local / "tokenizer").mkdir(parents=True)
    (local / "model.safetensors").write_bytes(b"\0" * 5000)
    (local / "tokenizer" / "vocab.json").write_text("{}")
    upload_dir(local, "s3://unihema/verify-run", "export", cfg, verify=True)
    embedded_s3.client().put_object(Bucket="unihema", Key="verify-run/export/model.safetensors", Body=b"\0" * 10)
    fs, root = open_filesystem("s3://unihema/verify-run/export", cfg)
    with pytest.raises(StorageIntegrityError, match=r"model.safetensors \(10 bytes, expected 5000\)"):
        verify_upload(local, fs, root, "s3://unihema/verify-run/export")
