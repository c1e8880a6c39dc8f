"""Data: the record schema and shards every task shares, the synthetic generator, the input pipeline."""
