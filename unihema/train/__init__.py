"""Distributed training: the one place that knows about Ray Train, DeepSpeed and parallelism."""
