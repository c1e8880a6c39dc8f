"""The fused Triton deformable-attention kernel against the grid_sample reference.

On CPU the kernels run in Triton's interpreter. TRITON_INTERPRET is read when
``@triton.jit`` decorates the kernels, so it must be in the environment before
``unihema.ops.ms_deform_attn_triton`` is imported. We run the kernel side in a subprocess
(``msda_interpret_worker.py``) rather than setting the variable in a conftest: a conftest
runs after other test directories may already have imported triton (through torch.compile,
say), and it would leak the interpreter into every test of the session, including the CUDA
ones on a GPU machine, where the real compiled kernel must be tested. One subprocess for all
cases keeps the cost to one interpreter start-up.

Tolerances: float32 ``rtol=atol=1e-5`` (the kernel and grid_sample compute pixel
coordinates with different rounding); gradients wrt sampling locations are compared per
pixel (divided by the level's width/height, see ``_per_pixel``). bfloat16: the kernel
accumulates in float32 and rounds its outputs and gradients to bfloat16, so it is compared
with the float32 reference on the same (bf16-valued) inputs at ``rtol=1.6e-2, atol=1e-3``,
bf16's resolution.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unihema.ops import MSDeformAttn, ms_deform_attn, ms_deform_attn_reference

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("msda_interpret_worker.py")
FP32_TOL = dict(rtol=1e-5, atol=1e-5)
BF16_TOL = dict(rtol=1.6e-2, atol=1e-3)

# (name, spatial shapes (h, w) per level, heads, head_dim, queries, points, batch, dtype);
# dtype "mixed" is a bf16 value with fp32 locations and weights, as under autocast.
FUNCTION_CASES = [
    ("l1_p1_7x5", [(7, 5)], 2, 8, 9, 1, 2, torch.float32),
    ("l2_p3_odd", [(7, 5), (3, 11)], 2, 8, 10, 3, 2, torch.float32),
    ("l3_p2_with_1x1", [(4, 4), (5, 7), (1, 1)], 3, 12, 70, 2, 1, torch.float32),
    ("l4_p4_pyramid", [(8, 10), (4, 5), (2, 3), (1, 2)], 2, 16, 33, 4, 2, torch.float32),
    ("l2_p2_bf16", [(7, 5), (3, 11)], 2, 8, 10, 2, 2, torch.bfloat16),
    ("l2_p2_mixed", [(7, 5), (3, 11)], 2, 8, 10, 2, 2, "mixed"),
]


def make_inputs(shapes, heads, dim, lq, points, batch, dtype, seed):
    """Random deformable-attention inputs; ~30% of the points fall outside [0, 1], a few far out."""
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    levels = len(shapes)
    value = torch.randn(batch, int(sizes.sum()), heads, dim, generator=gen)
    locations = torch.rand(batch, lq, heads, levels, points, 2, generator=gen) * 1.6 - 0.3
    far = torch.rand(locations.shape, generator=gen) < 0.05
    far_values = torch.tensor([2.5, -3.0, 1e6, -1e7])[torch.randint(4, locations.shape, generator=gen)]
    locations = torch.where(far, far_values, locations)
    weights = torch.rand(batch, lq, heads, levels, points, generator=gen).softmax(-1)
    grad_out = torch.randn(batch, lq, heads * dim, generator=gen)
    value_dtype, rest_dtype = (torch.bfloat16, torch.float32) if dtype == "mixed" else (dtype, dtype)
    cast = [value.to(value_dtype), spatial_shapes, level_start_index, locations.to(rest_dtype), weights.to(rest_dtype)]
    return cast, grad_out.to(value_dtype)


def module_case(reference_dims, padded, seed):
    """An MSDeformAttn with perturbed weights and inputs, optionally with padding."""
    torch.manual_seed(seed)
    config = dict(d_model=32, n_levels=3, n_heads=4, n_points=2)
    module = MSDeformAttn(**config)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    shapes = torch.tensor([(6, 5), (3, 3), (2, 1)])
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    batch, lq, s = 2, 12, int(sizes.sum())
    ref = torch.rand(batch, lq, 3, reference_dims)
    if reference_dims == 4:
        ref[..., 2:] = ref[..., 2:] * 0.5 + 0.05
    mask = torch.zeros(batch, s, dtype=torch.bool)
    if padded:
        mask[1, s // 2 :] = True
    inputs = dict(
        query=torch.randn(batch, lq, 32),
        reference_points=ref,
        input_flatten=torch.randn(batch, s, 32),
        input_spatial_shapes=shapes,
        input_level_start_index=starts,
        input_padding_mask=mask if padded else None,
    )
    return dict(
        kind="module", config=config, state_dict=module.state_dict(), inputs=inputs, grad_out=torch.randn(batch, lq, 32)
    )


MODULE_CASES = {
    "module_points_padded": (2, True),
    "module_boxes_padded": (4, True),
    "module_points_unpadded": (2, False),
}


def build_cases():
    cases = {}
    for i, (name, shapes, heads, dim, lq, points, batch, dtype) in enumerate(FUNCTION_CASES):
        inputs, grad_out = make_inputs(shapes, heads, dim, lq, points, batch, dtype, seed=i)
        cases[name] = dict(kind="function", inputs=inputs, grad_out=grad_out)
    for i, (name, (dims, padded)) in enumerate(MODULE_CASES.items()):
        cases[name] = module_case(dims, padded, seed=100 + i)
    return cases


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """Cases plus the kernel's results from one TRITON_INTERPRET=1 subprocess."""
    pytest.importorskip("triton", reason="triton is not installed: the reference backend runs instead")
    cases = build_cases()
    tmp = tmp_path_factory.mktemp("msda")
    torch.save(cases, tmp / "cases.pt")
    env = dict(
        os.environ,
        TRITON_INTERPRET="1",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        # The interpreter runs one numpy op at a time; extra torch threads only add
        # contention on a shared CI box.
        OMP_NUM_THREADS="1",
    )
    env.pop("UNIHEMA_MSDA_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp / "cases.pt"), str(tmp / "results.pt")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"interpreter worker failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    results = torch.load(tmp / "results.pt")
    if not results["__interpreted__"]:
        pytest.skip("this triton build ignored TRITON_INTERPRET=1: its CPU interpreter is unavailable")
    return cases, results


def _result(interpreted, name):
    cases, results = interpreted
    result = results[name]
    if "error" in result:
        pytest.fail(f"kernel raised in the interpreter:\n{result['error']}")
    return cases[name], result


def _reference_function(case):
    inputs = [t.detach().float().requires_grad_() if t.is_floating_point() else t for t in case["inputs"]]
    out = ms_deform_attn_reference(*inputs)
    grads = torch.autograd.grad(out, [inputs[0], inputs[3], inputs[4]], case["grad_out"].float())
    return out, grads


def _per_pixel(grads, case):
    """Location grads divided by the level's (w, h): gradients wrt pixel coordinates.

    d out / d loc_x is W times d out / d pixel_x and sums terms of size |grad_out * value|
    that largely cancel, so its float32 rounding error grows with the map width; per pixel
    the error is O(eps * |grad_out| * |value|) on every level and one tolerance fits all.
    """
    value_grad, loc_grad, weight_grad = grads
    wh = case["inputs"][1].flip(-1).to(loc_grad.device, torch.float32)  # (L, 2) as (w, h)
    return value_grad, loc_grad.float() / wh[None, None, None, :, None, :], weight_grad


@pytest.mark.parametrize("name", [c[0] for c in FUNCTION_CASES if c[-1] == torch.float32])
def test_kernel_matches_reference_fp32(interpreted, name):
    """Interpreted kernel output and grads (value, locations, weights) equal the reference in fp32."""
    case, result = _result(interpreted, name)
    out, grads = _reference_function(case)
    torch.testing.assert_close(result["out"], out.detach(), **FP32_TOL)
    pairs = zip(("value", "locations per pixel", "weights"), _per_pixel(result["grads"], case), _per_pixel(grads, case))
    for label, got, want in pairs:
        torch.testing.assert_close(got, want, **FP32_TOL, msg=lambda m, label=label: f"grad {label}: {m}")


@pytest.mark.parametrize("name", [c[0] for c in FUNCTION_CASES if c[-1] != torch.float32])
def test_kernel_matches_reference_bf16(interpreted, name):
    """bf16 (and bf16-value mixed) kernel output and grads match the fp32 reference at bf16 resolution."""
    case, result = _result(interpreted, name)
    assert result["out"].dtype == torch.bfloat16
    out, grads = _reference_function(case)
    torch.testing.assert_close(result["out"].float(), out.detach(), **BF16_TOL)
    inputs = case["inputs"]
    for given, got in zip((inputs[0], inputs[3], inputs[4]), result["grads"]):
        assert got.dtype == given.dtype
    pairs = zip(("value", "locations per pixel", "weights"), _per_pixel(result["grads"], case), _per_pixel(grads, case))
    for label, got, want in pairs:
        torch.testing.assert_close(got.float(), want, **BF16_TOL, msg=lambda m, label=label: f"grad {label}: {m}")


@pytest.mark.parametrize("name", list(MODULE_CASES))
def test_module_with_kernel_matches_reference(interpreted, name):
    """MSDeformAttn on the interpreted kernel equals it on the reference, incl. padding masks."""
    case, result = _result(interpreted, name)
    module = MSDeformAttn(**case["config"], backend="reference")
    module.load_state_dict(case["state_dict"])
    inputs = dict(case["inputs"])
    inputs["query"] = inputs["query"].clone().requires_grad_()
    inputs["input_flatten"] = inputs["input_flatten"].clone().requires_grad_()
    out = module(**inputs)
    named = sorted(module.named_parameters())
    wrt = [inputs["query"], inputs["input_flatten"]] + [p for _, p in named]
    grads = torch.autograd.grad(out, wrt, case["grad_out"])
    torch.testing.assert_close(result["out"], out.detach(), **FP32_TOL)
    labels = ["query", "input_flatten"] + [n for n, _ in named]
    for label, got, want in zip(labels, result["grads"], grads):
        torch.testing.assert_close(got, want, **FP32_TOL, msg=lambda m, label=label: f"grad {label}: {m}")
    mask = inputs["input_padding_mask"]
    if mask is not None:
        assert result["grads"][1][mask].abs().max() == 0, "padded positions must get no gradient"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_on_cuda_matches_reference(dtype):
    """Compiled kernel on CUDA: values and grads against the fp32 reference."""
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16 support")
    tol = FP32_TOL if dtype == torch.float32 else BF16_TOL
    inputs, grad_out = make_inputs([(25, 42), (13, 21), (7, 11), (4, 6)], 8, 32, 300, 4, 2, dtype, seed=7)
    cuda = [t.cuda().requires_grad_() if t.is_floating_point() else t.cuda() for t in inputs]
    out = ms_deform_attn(*cuda, backend="triton")
    got = torch.autograd.grad(out, [cuda[0], cuda[3], cuda[4]], grad_out.cuda())
    case = dict(inputs=[t.cuda() for t in inputs], grad_out=grad_out.cuda())
    want_out, want = _reference_function(case)
    torch.testing.assert_close(out.float(), want_out.detach(), **tol)
    for g, w in zip(_per_pixel(got, case), _per_pixel(want, case)):
        torch.testing.assert_close(g.float(), w, **tol)
