"""Fixtures of the training tests."""

import socket

import pytest
import torch.distributed as dist


@pytest.fixture(scope="module")
def process_group():
    """A one-rank gloo process group bound to 127.0.0.1 (DeepSpeed keeps it once it has seen it)."""
    import os

    os.environ.setdefault("LOCAL_RANK", "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    import deepspeed.comm

    deepspeed.comm.destroy_process_group()  # also forgets DeepSpeed's cached groups
