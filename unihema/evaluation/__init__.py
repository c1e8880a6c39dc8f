"""Evaluation and inference of trained models (the library behind the CLIs and training validation).

    run          every task over a dataset split, the linear probe, metrics.json + report.md + plots
    collect      per-task collectors of predictions; scores: the metrics (pycocotools, scikit-learn,
                 sacrebleu, rouge-score); probe: the DinoBloom linear probe; report: markdown and plots
    images       user image files -> RGB, or a one-line refusal naming the file and the reason
    inference    single-image predictions for every task; overlay: boxes, masks and labels drawn

Checkpoints are loaded through :mod:`unihema.checkpoint`. Command lines: ``python -m unihema.evaluate``,
``python -m unihema.predict``.
"""
