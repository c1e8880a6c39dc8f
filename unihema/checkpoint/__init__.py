"""Checkpoints: the one owner of the format training writes and every other command reads.

    files        the DeepSpeed layout (the ``checkpoint`` tag, rank 0's file name), what a path is
                 (export folder, DeepSpeed folder of any ZeRO stage, run folder), s3:// downloads
    safe_load    weights-only loading of files made by someone else (``--trust-checkpoint``)
    consolidate  a DeepSpeed checkpoint of any ZeRO stage -> one fp32 state dict
    load         any checkpoint path or s3:// URI -> model, config and tokenizer
    export       -> the shareable folder ``from_pretrained`` loads (``python -m unihema.export``,
                 the end of a ``pretrain`` run)

Training imports ``files`` for the tag; evaluation, prediction, export and ``model.init_from``
load through ``load``. Nothing here imports ``unihema.train`` or ``unihema.evaluation``.
"""
