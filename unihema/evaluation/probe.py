"""The single-cell linear probe (DinoBloom's protocol) on the model's frozen ``cell_feature``.

Features of the classification records are extracted without augmentation from the train
split and the evaluation split; a logistic regression (scikit-learn, L-BFGS, standardised
features) is fitted on the train features and scored on the evaluation features with
accuracy and macro / weighted F1. It measures how much cell identity the shared
representation holds, apart from the trained classifier head.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from unihema import labels
from unihema.errors import require
from unihema.evaluation import scores


@torch.no_grad()
def extract_features(model, batches: Iterable[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, d), labels (n,)) of the labelled cells in ``batches``."""
    feats, ys = [], []
    for batch in batches:
        valid = batch["cell_labels"] >= 0
        if not valid.any():
            continue
        f = model.cell_features(batch["images"], batch["pixel_mask"]).float()
        feats.append(f[valid].cpu().numpy())
        ys.append(batch["cell_labels"][valid].cpu().numpy())
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(feats), np.concatenate(ys)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    seed: int = 0,
    max_iter: int = 1000,
    C: float = 1.0,
) -> dict:
    """Fit on train, score on test; ``{"skipped": reason}`` when there is too little to fit."""
    if len(train_y) == 0 or len(test_y) == 0:
        return {"skipped": f"needs labelled cells in both splits (train {len(train_y)}, eval {len(test_y)})"}
    if len(np.unique(train_y)) < 2:
        return {"skipped": f"the train split has a single cell class ({labels.CELL_CLASSES[int(train_y[0])]})"}
    linear_model = require("sklearn.linear_model", "the linear probe")
    pipeline = require("sklearn.pipeline", "the linear probe")
    preprocessing = require("sklearn.preprocessing", "the linear probe")
    clf = pipeline.make_pipeline(
        preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=max_iter, C=C, random_state=seed)
    )
    clf.fit(train_x, train_y)
    pred = clf.predict(test_x)
    out = scores.classification_scores(test_y, pred, labels.CELL_CLASSES)
    out.update(
        train_count=int(len(train_y)),
        feature_dim=int(train_x.shape[1]),
        train_accuracy=float((clf.predict(train_x) == train_y).mean()),
    )
    return out
