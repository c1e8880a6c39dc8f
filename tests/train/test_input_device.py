"""Input to the device: uint8 images from collate, normalized where they land; losses read only when logged."""

import sys
from pathlib import Path

import pytest
import torch

from unihema.config import load_config
from unihema.data.collate import move_to, normalize_images, uint8_images
from unihema.train.telemetry import StepTimer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from train_bench import make_batches  # noqa: E402


def test_uint8_collate_normalized_on_the_device_matches_host_normalization():
    """Inside uint8_images collate leaves uint8 (a quarter of the bytes); normalize_images gives the host's floats."""
    cfg = load_config("tiny")
    host = dict(make_batches(cfg, 2, 3))
    with uint8_images():
        raw = dict(make_batches(cfg, 2, 3))
    for task in host:
        assert raw[task]["images"].dtype == torch.uint8 and host[task]["images"].dtype == torch.float32
        assert raw[task]["images"].shape == host[task]["images"].shape
        done = normalize_images(move_to(raw[task], torch.device("cpu")))
        torch.testing.assert_close(done["images"], host[task]["images"], rtol=0, atol=1e-5)
        assert torch.equal(done["pixel_mask"], host[task]["pixel_mask"])
    assert normalize_images(host["detection"]) is host["detection"]  # float images pass through


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_uint8_images_normalize_on_the_gpu():
    """With pin_memory the uint8 images are page-locked, copied asynchronously and normalized on the GPU."""
    cfg = load_config("tiny")
    host = dict(make_batches(cfg, 2, 1))["detection"]
    with uint8_images(pin_memory=True):
        raw = dict(make_batches(cfg, 2, 1))["detection"]
    assert raw["images"].is_pinned()
    done = normalize_images(move_to(raw, torch.device("cuda")))
    assert done["images"].is_cuda and done["images"].dtype == torch.float32
    torch.testing.assert_close(done["images"].cpu(), host["images"], rtol=0, atol=1e-5)


def test_step_timer_takes_loss_tensors_and_reads_them_once_per_summary():
    """The loop hands the timer detached loss tensors; the summary averages them into plain floats."""
    timer = StepTimer()
    for value in (1.0, 2.0, 4.5):
        timer.add(0.0, 2, 10, 0, {"loss": torch.tensor(value), "loss_detection": torch.tensor(value * 2)})
    summary = timer.summary()
    assert isinstance(summary["loss"], float) and summary["loss"] == pytest.approx(2.5)
    assert summary["loss_detection"] == pytest.approx(5.0)
    timer.add(0.0, 1, 1, 0, {"loss": 3.0})  # plain floats still work
    assert timer.summary()["loss"] == pytest.approx(2.625)
