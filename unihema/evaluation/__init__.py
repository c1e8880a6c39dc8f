"""Evaluation and inference of trained models: the library behind the CLIs and training validation.

    evaluators      one evaluator per task (forward / generate, targets, mergeable statistics,
                    metrics, plot data), the loop that runs one, the HEADLINE / CHANCE table;
                    training validation and ``python -m unihema.evaluate`` both use it
    answer_ranking  VQA closed-vocabulary ranking (used by the VQA evaluator)
    scores          the metrics over gathered predictions (scikit-learn, sacrebleu, rouge-score)
    run             every task over a dataset split, the linear probe (probe), metrics.json +
                    report.md + plots (report)
    images          user image files -> RGB, or a one-line refusal naming the file and the reason
    inference       single-image predictions for every task; overlay: boxes, masks and labels drawn

Checkpoints are loaded through :mod:`unihema.checkpoint`. Command lines: ``python -m unihema.evaluate``,
``python -m unihema.predict``.
"""
