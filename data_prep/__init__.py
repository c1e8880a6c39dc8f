"""Data prep: public hematology datasets into validated, unified Parquet shards.

`python -m data_prep list | info | convert | validate | stats | dedup`; see docs/DATA_PREP.md.
"""
