"""Multi-scale deformable attention (Deformable DETR) behind one dispatcher.

The deformable encoder (6 layers over ~22K tokens of four feature levels) and the decoder
cross-attention (900 queries) spend most of the detector's time and memory here. Two
backends compute the same function:

* ``reference``: the grid_sample formulation of Deformable DETR
  (``ms_deform_attn_core_pytorch``). Always available, differentiable by autograd, and the
  test oracle.
* ``triton``: the fused kernel in ``ms_deform_attn_triton.py`` (forward and backward).
  Runs on CUDA tensors, or on CPU tensors inside Triton's interpreter when
  ``TRITON_INTERPRET=1`` was set before the kernels were imported (tests only: it is slow).

Choosing a backend: ``backend=`` on the call, else :func:`set_ms_deform_attn_backend`, else
the ``UNIHEMA_MSDA_BACKEND`` env var, else ``"auto"``: triton on CUDA when triton imports,
reference otherwise (also on CPU with the interpreter on, which must be asked for). A forced
backend that cannot run raises :class:`BackendUnavailableError` saying why.

Precision: with float32 inputs the kernel agrees with the reference to 1e-5 (rtol and atol)
in the output and the gradients; gradients wrt locations agree to 1e-5 per pixel (after
dividing by the level's width/height: they are sums of W-scaled terms that cancel). The
two compute pixel coordinates as ``x * W - 0.5`` and ``((2x - 1 + 1) * W - 1) / 2``.
bfloat16 inputs are accumulated in float32 by the kernel but rounded to bfloat16 by the
reference at every step; compare both with a float32 reference on the same inputs at
bf16 resolution (rtol 1.6e-2, atol 1e-3).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import torch
import torch.nn.functional as F

from .dispatch import BackendCheck, BackendSetting, import_failure

__all__ = [
    "MSDA_BACKENDS",
    "check_ms_deform_attn_backends",
    "choose_ms_deform_attn_backend",
    "get_ms_deform_attn_backend",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "set_ms_deform_attn_backend",
]

MSDA_BACKENDS = ("triton", "reference")
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_SETTING = BackendSetting("ms_deform_attn", "UNIHEMA_MSDA_BACKEND", MSDA_BACKENDS, logging.getLogger(__name__))


def set_ms_deform_attn_backend(name: str | None) -> None:
    """Set the process-wide deformable-attention backend (``"auto"`` or None: by capability)."""
    _SETTING.set(name)


def get_ms_deform_attn_backend() -> str:
    return _SETTING.get()


def ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Deformable attention by ``F.grid_sample`` (bilinear, zero padding, align_corners=False).

    Args:
        value: (N, S, H, Dh), S = sum of h*w over levels.
        spatial_shapes: (L, 2) long, (h, w) per level.
        level_start_index: (L,) long, offset of each level in S.
        sampling_locations: (N, Lq, H, L, P, 2), (x, y) normalised to [0, 1]; outside
            points sample zeros.
        attention_weights: (N, Lq, H, L, P).

    Returns:
        (N, Lq, H*Dh) in value's dtype. Mixed dtypes (bf16 value, fp32 locations, as under
        autocast) are computed in the wider one.
    """
    n, _, heads, dim = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    # grid_sample needs plain ints for the reshape; this is a host sync on CUDA, one reason
    # the fused kernel (which reads the shapes on device) exists.
    shapes = spatial_shapes.tolist()
    starts = level_start_index.tolist()
    # grid_sample wants one dtype. Promote rather than cast down: bf16 locations are only
    # good to 1/256 of the map, i.e. most of a pixel on the 167-wide level.
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    out_dtype = value.dtype
    value = value.to(dtype)
    grids = 2.0 * sampling_locations.to(dtype) - 1.0
    sampled = []
    for lvl, ((h, w), start) in enumerate(zip(shapes, starts)):
        value_l = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(n * heads, dim, h, w)
        grid_l = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N*H, Lq, P, 2)
        sampled.append(
            F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (N*H, Dh, Lq, P)
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(n * heads, 1, lq, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)  # (N*H, Dh, Lq)
    return out.view(n, heads * dim, lq).transpose(1, 2).contiguous().to(out_dtype)


@dataclasses.dataclass(frozen=True)
class _MSDACall:
    device_type: str
    dtype: torch.dtype
    head_dim: int
    interpret: bool  # TRITON_INTERPRET at call time: part of the key so a late change is noticed


def _interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def _check_triton(call: _MSDACall) -> str | None:
    failure = import_failure("triton")
    if failure:
        return failure
    if call.device_type == "cpu" and not call.interpret:
        return (
            "triton kernels need CUDA tensors (got cpu); set TRITON_INTERPRET=1 before triton is "
            "imported to run them on CPU in the (slow) interpreter"
        )
    if call.device_type not in ("cpu", "cuda"):
        return f"triton kernels need CUDA tensors (got {call.device_type})"
    failure = import_failure(f"{__package__}.ms_deform_attn_triton")
    if failure:
        return failure
    from . import ms_deform_attn_triton as kernels

    if call.device_type == "cpu" and not kernels.INTERPRETED:
        return "TRITON_INTERPRET=1 was set after the triton kernels were compiled; set it before importing"
    if call.device_type == "cuda" and kernels.INTERPRETED:
        return "the triton kernels were built for the interpreter (TRITON_INTERPRET=1); unset it for CUDA"
    if call.dtype not in _KERNEL_DTYPES:
        return f"the triton kernel takes float32/float16/bfloat16 value (got {call.dtype})"
    if call.head_dim > kernels.MAX_HEAD_DIM:
        return f"the triton kernel supports head_dim <= {kernels.MAX_HEAD_DIM} (got {call.head_dim})"
    return None


_checks_cache: dict[_MSDACall, tuple[BackendCheck, ...]] = {}


def _checks(call: _MSDACall) -> tuple[BackendCheck, ...]:
    if call not in _checks_cache:
        reason = _check_triton(call)
        _checks_cache[call] = (BackendCheck("triton", reason is None, reason or ""), BackendCheck("reference", True))
    return _checks_cache[call]


def _describe(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> _MSDACall:
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, H, Dh), got {tuple(value.shape)}")
    n, _, heads, dim = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f"sampling_locations must be (N, Lq, H, L, P, 2), got {tuple(sampling_locations.shape)}")
    _, lq, _, levels, points, _ = sampling_locations.shape
    if sampling_locations.shape[0] != n or sampling_locations.shape[2] != heads:
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} do not match value {tuple(value.shape)}"
        )
    if tuple(attention_weights.shape) != (n, lq, heads, levels, points):
        raise ValueError(
            f"attention_weights must be {(n, lq, heads, levels, points)}, got {tuple(attention_weights.shape)}"
        )
    if tuple(spatial_shapes.shape) != (levels, 2) or tuple(level_start_index.shape) != (levels,):
        raise ValueError(
            f"spatial_shapes must be ({levels}, 2) and level_start_index ({levels},), got "
            f"{tuple(spatial_shapes.shape)} and {tuple(level_start_index.shape)}"
        )
    return _MSDACall(value.device.type, value.dtype, dim, _interpret_requested())


def check_ms_deform_attn_backends(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights
) -> list[BackendCheck]:
    """Which deformable-attention backends can run this call and, for the others, why not."""
    return list(_checks(_describe(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)))


def _choose(call: _MSDACall, backend: str | None) -> str:
    def auto_pick(checks):
        # Never auto-pick the interpreter: it is orders of magnitude slower than grid_sample.
        return "triton" if call.device_type == "cuda" and checks[0].ok else "reference"

    described = f"{call.device_type} {str(call.dtype).removeprefix('torch.')} head_dim={call.head_dim}"
    return _SETTING.choose(backend, _checks(call), auto_pick, call, described)


def choose_ms_deform_attn_backend(
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights, *, backend=None
) -> str:
    """The backend :func:`ms_deform_attn` would run (raises like it would)."""
    call = _describe(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return _choose(call, backend)


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Multi-scale deformable attention; same arguments as :func:`ms_deform_attn_reference`.

    ``backend``: ``"triton"``, ``"reference"`` or ``"auto"``; None defers to
    :func:`set_ms_deform_attn_backend` / ``UNIHEMA_MSDA_BACKEND``. Returns (N, Lq, H*Dh).
    """
    call = _describe(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if _choose(call, backend) == "triton":
        from .ms_deform_attn_triton import MSDeformAttnTriton

        return MSDeformAttnTriton.apply(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
