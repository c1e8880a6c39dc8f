"""The deformable-attention reference, its dispatcher and the MSDeformAttn layer (in-process).

The kernel-vs-reference checks live in ``test_msda_triton.py``; here the oracle itself is
checked against bilinear sampling written out by hand, and the dispatcher's choices and
errors are checked without the Triton interpreter.
"""

from __future__ import annotations

import math

import pytest
import torch

from unihema.ops import (
    BackendUnavailableError,
    MSDeformAttn,
    check_ms_deform_attn_backends,
    choose_ms_deform_attn_backend,
    ms_deform_attn,
    ms_deform_attn_reference,
    set_ms_deform_attn_backend,
)


def make(shapes=((7, 5), (3, 11)), heads=2, dim=3, lq=6, points=2, batch=2, dtype=torch.float64, seed=0):
    """Random inputs with about a third of the points outside [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes)
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    levels = len(shapes)
    value = torch.randn(batch, int(sizes.sum()), heads, dim, generator=gen, dtype=dtype)
    locations = torch.rand(batch, lq, heads, levels, points, 2, generator=gen, dtype=dtype) * 1.6 - 0.3
    weights = torch.rand(batch, lq, heads, levels, points, generator=gen, dtype=dtype)
    return value, spatial_shapes, starts, locations, weights


def naive(value, spatial_shapes, starts, locations, weights):
    """Bilinear sampling with zero padding, one point at a time (align_corners=False)."""
    n, _, heads, dim = value.shape
    _, lq, _, levels, points, _ = locations.shape
    out = torch.zeros(n, lq, heads, dim, dtype=value.dtype)
    for b in range(n):
        for q in range(lq):
            for h in range(heads):
                for lvl in range(levels):
                    hl, wl = spatial_shapes[lvl].tolist()
                    grid = value[b, starts[lvl] : starts[lvl] + hl * wl, h].view(hl, wl, dim)
                    for p in range(points):
                        x = locations[b, q, h, lvl, p, 0].item() * wl - 0.5
                        y = locations[b, q, h, lvl, p, 1].item() * hl - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < hl and 0 <= xx < wl:
                                corner = (1 - abs(y - yy)) * (1 - abs(x - xx))
                                out[b, q, h] += weights[b, q, h, lvl, p] * corner * grid[yy, xx]
    return out.view(n, lq, heads * dim)


def test_reference_matches_hand_written_bilinear():
    """The grid_sample oracle equals explicit bilinear sampling, incl. odd sizes and outside points."""
    args = make()
    torch.testing.assert_close(ms_deform_attn_reference(*args), naive(*args))


def test_reference_gradcheck():
    """gradcheck of the reference wrt value, locations and weights (float64)."""
    value, shapes, starts, locations, weights = make(shapes=((3, 4), (2, 3)), lq=3, batch=1, dim=2)
    locations = locations.clamp(0.05, 0.95)  # keep away from the kinks at the map border

    def fn(v, loc, w):
        return ms_deform_attn_reference(v, shapes, starts, loc, w)

    leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
    assert torch.autograd.gradcheck(fn, leaves)


def test_auto_picks_reference_on_cpu(monkeypatch):
    """Without CUDA, auto runs the reference, even with the interpreter switched on."""
    args = make(dtype=torch.float32)
    assert choose_ms_deform_attn_backend(*args) == "reference"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert choose_ms_deform_attn_backend(*args) == "reference"
    torch.testing.assert_close(ms_deform_attn(*args), ms_deform_attn_reference(*args))


def test_forced_triton_on_cpu_explains_why(monkeypatch):
    """Forcing triton on CPU without the interpreter raises, naming TRITON_INTERPRET and the fallback."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args = make(dtype=torch.float32)
    with pytest.raises(BackendUnavailableError) as info:
        ms_deform_attn(*args, backend="triton")
    message = str(info.value)
    assert "would run it: reference" in message
    assert "TRITON_INTERPRET" in message or "not importable" in message
    check = check_ms_deform_attn_backends(*args)
    assert [c.name for c in check] == ["triton", "reference"] and not check[0].ok and check[1].ok


def test_override_precedence(monkeypatch):
    """argument > set_ms_deform_attn_backend > UNIHEMA_MSDA_BACKEND > auto; bad names fail."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args = make(dtype=torch.float32)
    monkeypatch.setenv("UNIHEMA_MSDA_BACKEND", "triton")
    with pytest.raises(BackendUnavailableError, match="UNIHEMA_MSDA_BACKEND"):
        ms_deform_attn(*args)
    set_ms_deform_attn_backend("reference")
    assert choose_ms_deform_attn_backend(*args) == "reference"
    with pytest.raises(BackendUnavailableError, match="argument"):
        ms_deform_attn(*args, backend="triton")
    with pytest.raises(ValueError, match="unknown ms_deform_attn backend"):
        set_ms_deform_attn_backend("cuda")


def test_shape_errors_are_clear():
    """Mismatched input shapes fail with a ValueError naming the expected shape."""
    value, shapes, starts, locations, weights = make()
    with pytest.raises(ValueError, match="attention_weights must be"):
        ms_deform_attn(value, shapes, starts, locations, weights[..., :1])


def test_module_parameters_match_official_checkpoint():
    """MSDeformAttn(256, 4, 8, 4) has the official names and element counts (params.json)."""
    module = MSDeformAttn()
    counts = {n: p.numel() for n, p in module.named_parameters()}
    assert counts == {
        "sampling_offsets.weight": 65536,
        "sampling_offsets.bias": 256,
        "attention_weights.weight": 32768,
        "attention_weights.bias": 128,
        "value_proj.weight": 65536,
        "value_proj.bias": 256,
        "output_proj.weight": 65536,
        "output_proj.bias": 256,
    }


def test_module_init_is_deformable_detr():
    """Init: zero offset weights, per-head direction * (point index + 1) biases, uniform weights."""
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    assert module.sampling_offsets.weight.abs().sum() == 0
    bias = module.sampling_offsets.bias.view(4, 2, 3, 2)
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    torch.testing.assert_close(bias[1, 1], torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]), atol=1e-6, rtol=0)
    assert module.attention_weights.weight.abs().sum() == 0 and module.attention_weights.bias.abs().sum() == 0


def _module_inputs(reference_dims, seed=0):
    torch.manual_seed(seed)
    shapes = torch.tensor([(6, 5), (3, 3)])
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    s = int(sizes.sum())
    mask = torch.zeros(2, s, dtype=torch.bool)
    mask[1, 20:30] = True
    mask[1, 35:] = True
    ref = torch.rand(2, 9, 2, reference_dims)
    return torch.randn(2, 9, 32), ref, torch.randn(2, s, 32), shapes, starts, mask


@pytest.mark.parametrize("reference_dims", [2, 4])
def test_padded_positions_do_not_influence_output(reference_dims):
    """With input_padding_mask, changing features at padded positions leaves the output unchanged."""
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2)
    query, ref, flat, shapes, starts, mask = _module_inputs(reference_dims)
    out = module(query, ref, flat, shapes, starts, mask)
    assert out.shape == (2, 9, 32)
    noisy = flat + 100.0 * torch.randn_like(flat) * mask[..., None]
    torch.testing.assert_close(module(query, ref, noisy, shapes, starts, mask), out)
    assert not torch.allclose(module(query, ref, noisy, shapes, starts, None), out)


def test_module_builds_on_meta_device():
    """MSDeformAttn can be built on the meta device and initialised after materialising."""
    with torch.device("meta"):
        module = MSDeformAttn()
    assert all(p.is_meta for p in module.parameters())
    module = module.to_empty(device="cpu")
    module.reset_parameters()
    assert module.sampling_offsets.bias.abs().max() == 4.0
