"""Training validation and ``python -m unihema.evaluate`` report the same numbers on the same model and data.

Both run the evaluators of ``unihema.evaluation.evaluators`` through one loop; this checks it
end to end, from the trainer's ``validate`` (one rank) and from the command line, on the
tiny model's export and the synthetic dataset, reading the same validation batches.
"""

from __future__ import annotations

import json

import pytest
import torch

from unihema.checkpoint.load import load_checkpoint
from unihema.config import TASKS
from unihema.evaluate import main as evaluate_main
from unihema.evaluation.evaluators import CHANCE, HEADLINE
from unihema.train.worker import _reported_metrics, validate


def test_training_validation_and_evaluate_cli_agree(export_dir, synthetic_data, tmp_path):
    """Every number training validation reports, headline and chance included, is in metrics.json with the
    same value, for every task; training also keeps the old VQA / MLM names as aliases."""
    loaded = load_checkpoint(str(export_dir), overrides=[f"data.uri={synthetic_data}"], device="cpu")
    cfg = loaded.cfg
    trained = validate(loaded.model, cfg, cfg.storage, loaded.tokenizer, rank=0, world=1, device=torch.device("cpu"))

    out = tmp_path / "eval"
    assert (
        evaluate_main(
            [
                "--checkpoint",
                str(export_dir),
                "--data",
                str(synthetic_data),
                "--out",
                str(out),
                "--max-batches",
                str(cfg.train.val_batches),
                "--no-probe",
                "--no-plots",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    cli = json.loads((out / "metrics.json").read_text())["tasks"]

    assert set(trained) == set(cli) == set(TASKS)
    for task in TASKS:
        assert HEADLINE[task] in trained[task] and CHANCE[task] in trained[task], task
        for key, value in trained[task].items():
            assert cli[task][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (task, key)
    reported = _reported_metrics(trained)
    assert reported["val_vqa_accuracy"] == reported["val_vqa_exact_match"] == cli["vqa"]["exact_match"]
    assert reported["val_mlm_accuracy"] == reported["val_mlm_token_accuracy"] == cli["mlm"]["token_accuracy"]
