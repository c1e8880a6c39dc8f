"""Evaluation: per-task metrics that can be accumulated across batches and ranks."""
