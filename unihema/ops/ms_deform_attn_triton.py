"""Fused Triton kernels for multi-scale deformable attention, forward and backward.

Why a kernel: the grid_sample reference materialises every sampled value,
(N*heads, head_dim, Lq, levels*points), before the weighted sum: 4.4 GB in fp32 for the
paper's encoder (batch 12, ~22K tokens) and as much again for autograd. The kernel gathers
the four bilinear corners straight from ``value``, accumulates the weighted sum in
registers and writes only the (N, Lq, heads*head_dim) output; the backward recomputes the
corners instead of saving them.

This module imports triton at the top, so import it only through the dispatcher in
``ms_deform_attn.py`` (lazily): CPU installs without triton never load it, and under
``TRITON_INTERPRET=1`` (read when ``@triton.jit`` runs, i.e. when this module is first
imported) the same kernels run on CPU tensors in Triton's interpreter for the tests.

Layout and numerics:
* value (N, S, H, D); sampling_locations (N, Lq, H, L, P, 2) as (x, y) in [0, 1];
  attention_weights (N, Lq, H, L, P); any float dtype mix, accumulated in float32.
* Coordinates follow grid_sample(align_corners=False, padding_mode="zeros"): pixel
  x = loc_x * W - 0.5, and a corner outside the map contributes zero value and zero grad.
* One program owns BLOCK_Q queries of one (batch, head) and the whole head_dim, so the
  gradients wrt locations and weights (reductions over head_dim) need no atomics. The
  gradient wrt value is a scatter and uses float32 atomics, so it is not bit-for-bit
  deterministic from run to run (differences at float32 rounding level).
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

# The decision to interpret is taken when the @triton.jit decorators below run; the
# dispatcher reads this to explain why CPU tensors cannot run if the env var came too late.
try:
    from triton import knobs

    INTERPRETED = bool(knobs.runtime.interpret)
except ImportError:  # triton < 3.3 reads the env var directly
    INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_HEAD_DIM = 256
BLOCK_Q_FWD = 64
BLOCK_Q_BWD = 32


@triton.jit
def _corner(value_base, start, hy, wx, h_l, w_l, stride_s, d_offs, q_mask, d_mask):
    """Load one bilinear corner (BLOCK_Q, BLOCK_D) in fp32; zero where it falls off the map."""
    valid = q_mask & (hy >= 0) & (hy < h_l) & (wx >= 0) & (wx < w_l)
    s = (start + hy * w_l + wx).to(tl.int64)
    ptrs = value_base + s[:, None] * stride_s + d_offs[None, :]
    mask = valid[:, None] & d_mask[None, :]
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32), mask, s


@triton.jit
def _coords(loc_ptr, attn_ptr, lp, q_mask, h_l, w_l):
    """Sampling point -> integer corner (h0, w0), fractional parts (lh, lw) and its weight."""
    x = tl.load(loc_ptr + lp * 2, mask=q_mask, other=0.0).to(tl.float32)
    y = tl.load(loc_ptr + lp * 2 + 1, mask=q_mask, other=0.0).to(tl.float32)
    a = tl.load(attn_ptr + lp, mask=q_mask, other=0.0).to(tl.float32)
    # Clamping to one pixel beyond the border changes nothing (every corner is off the map
    # there, so value and gradient are zero) but keeps the int conversion below in range.
    w_f = w_l.to(tl.float32)
    h_f = h_l.to(tl.float32)
    w_im = tl.minimum(tl.maximum(x * w_f - 0.5, -2.0), w_f + 1.0)
    h_im = tl.minimum(tl.maximum(y * h_f - 0.5, -2.0), h_f + 1.0)
    h0f = tl.floor(h_im)
    w0f = tl.floor(w_im)
    return h0f.to(tl.int32), w0f.to(tl.int32), h_im - h0f, w_im - w0f, a


@triton.jit
def _tile(S, Lq, H, D, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's queries and channels: offsets, masks, and its (n, h) slice of value."""
    pid_nh = tl.program_id(1)
    n = (pid_nh // H).to(tl.int64)
    h = (pid_nh % H).to(tl.int64)
    q_offs = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d_offs = tl.arange(0, BLOCK_D)
    stride_s = H * D
    value_offset = n * S * stride_s + h * D
    row = (n * Lq + q_offs) * H + h  # flat (n, q, h) index shared by loc, attn and out
    return q_offs < Lq, d_offs, d_offs < D, stride_s, value_offset, row


@triton.jit
def _corners(value_base, start, h0, w0, h_l, w_l, stride_s, d_offs, q_mask, d_mask):
    """The four bilinear corners (values, load masks, flat positions) around (h0, w0)."""
    v00, m00, s00 = _corner(value_base, start, h0, w0, h_l, w_l, stride_s, d_offs, q_mask, d_mask)
    v01, m01, s01 = _corner(value_base, start, h0, w0 + 1, h_l, w_l, stride_s, d_offs, q_mask, d_mask)
    v10, m10, s10 = _corner(value_base, start, h0 + 1, w0, h_l, w_l, stride_s, d_offs, q_mask, d_mask)
    v11, m11, s11 = _corner(value_base, start, h0 + 1, w0 + 1, h_l, w_l, stride_s, d_offs, q_mask, d_mask)
    return v00, v01, v10, v11, m00, m01, m10, m11, s00, s01, s10, s11


@triton.jit
def _level(shapes_ptr, starts_ptr, lvl):
    """Height, width and flat start offset of level ``lvl``."""
    return tl.load(shapes_ptr + 2 * lvl), tl.load(shapes_ptr + 2 * lvl + 1), tl.load(starts_ptr + lvl)


@triton.jit
def _blend(v00, v01, v10, v11, lh, lw):
    """Bilinear interpolation of the four corners (BLOCK_Q, BLOCK_D) at fractions (lh, lw)."""
    hh = 1.0 - lh
    hw = 1.0 - lw
    sampled = (hh * hw)[:, None] * v00 + (hh * lw)[:, None] * v01
    return sampled + (lh * hw)[:, None] * v10 + (lh * lw)[:, None] * v11


@triton.jit
def _msda_fwd_kernel(
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attn_ptr,
    out_ptr,
    S,
    Lq,
    H,
    D,
    NUM_LEVELS: tl.constexpr,
    NUM_POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    q_mask, d_offs, d_mask, stride_s, value_offset, row = _tile(S, Lq, H, D, BLOCK_Q, BLOCK_D)
    value_base = value_ptr + value_offset
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
    for lvl in tl.static_range(NUM_LEVELS):
        h_l, w_l, start = _level(shapes_ptr, starts_ptr, lvl)
        for p in tl.static_range(NUM_POINTS):
            lp = (row * NUM_LEVELS + lvl) * NUM_POINTS + p
            h0, w0, lh, lw, a = _coords(loc_ptr, attn_ptr, lp, q_mask, h_l, w_l)
            v00, v01, v10, v11, _, _, _, _, _, _, _, _ = _corners(
                value_base, start, h0, w0, h_l, w_l, stride_s, d_offs, q_mask, d_mask
            )
            acc += a[:, None] * _blend(v00, v01, v10, v11, lh, lw)
    out_ptrs = out_ptr + row[:, None] * D + d_offs[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def _msda_bwd_kernel(
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attn_ptr,
    grad_out_ptr,
    grad_value_ptr,
    grad_loc_ptr,
    grad_attn_ptr,
    S,
    Lq,
    H,
    D,
    NUM_LEVELS: tl.constexpr,
    NUM_POINTS: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    q_mask, d_offs, d_mask, stride_s, value_offset, row = _tile(S, Lq, H, D, BLOCK_Q, BLOCK_D)
    value_base = value_ptr + value_offset
    grad_value_base = grad_value_ptr + value_offset
    io_mask = q_mask[:, None] & d_mask[None, :]
    g = tl.load(grad_out_ptr + row[:, None] * D + d_offs[None, :], mask=io_mask, other=0.0).to(tl.float32)
    col = d_offs[None, :]
    for lvl in tl.static_range(NUM_LEVELS):
        h_l, w_l, start = _level(shapes_ptr, starts_ptr, lvl)
        for p in tl.static_range(NUM_POINTS):
            lp = (row * NUM_LEVELS + lvl) * NUM_POINTS + p
            h0, w0, lh, lw, a = _coords(loc_ptr, attn_ptr, lp, q_mask, h_l, w_l)
            v00, v01, v10, v11, m00, m01, m10, m11, s00, s01, s10, s11 = _corners(
                value_base, start, h0, w0, h_l, w_l, stride_s, d_offs, q_mask, d_mask
            )
            sampled = _blend(v00, v01, v10, v11, lh, lw)
            tl.store(grad_attn_ptr + lp, tl.sum(g * sampled, axis=1), mask=q_mask)

            hh = 1.0 - lh
            hw = 1.0 - lw
            # d sampled / d lw and d lh; the chain rule through x * W - 0.5 multiplies by W (H).
            d_lw = hh[:, None] * (v01 - v00) + lh[:, None] * (v11 - v10)
            d_lh = hw[:, None] * (v10 - v00) + lw[:, None] * (v11 - v01)
            grad_x = a * w_l.to(tl.float32) * tl.sum(g * d_lw, axis=1)
            grad_y = a * h_l.to(tl.float32) * tl.sum(g * d_lh, axis=1)
            tl.store(grad_loc_ptr + lp * 2, grad_x, mask=q_mask)
            tl.store(grad_loc_ptr + lp * 2 + 1, grad_y, mask=q_mask)

            ga = g * a[:, None]
            tl.atomic_add(grad_value_base + s00[:, None] * stride_s + col, ga * (hh * hw)[:, None], mask=m00)
            tl.atomic_add(grad_value_base + s01[:, None] * stride_s + col, ga * (hh * lw)[:, None], mask=m01)
            tl.atomic_add(grad_value_base + s10[:, None] * stride_s + col, ga * (lh * hw)[:, None], mask=m10)
            tl.atomic_add(grad_value_base + s11[:, None] * stride_s + col, ga * (lh * lw)[:, None], mask=m11)


def _launch_meta(value, sampling_locations, block_q):
    n, s, heads, dim = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    grid = (triton.cdiv(lq, block_q), n * heads)
    meta = dict(NUM_LEVELS=levels, NUM_POINTS=points, BLOCK_Q=block_q, BLOCK_D=triton.next_power_of_2(dim))
    return grid, (s, lq, heads, dim), meta


def _device_guard(tensor):
    # Triton launches on the current CUDA device; follow the tensor on multi-GPU hosts.
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def msda_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Forward kernel launch; inputs must already be contiguous. Returns (N, Lq, H, D)."""
    n, _, heads, dim = value.shape
    lq = sampling_locations.shape[1]
    out = torch.empty((n, lq, heads, dim), dtype=value.dtype, device=value.device)
    grid, sizes, meta = _launch_meta(value, sampling_locations, BLOCK_Q_FWD)
    with _device_guard(value):
        _msda_fwd_kernel[grid](
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, out, *sizes, **meta
        )
    return out


def msda_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_out):
    """Backward kernel launch. Returns float32 grads wrt value, locations and weights."""
    grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
    grad_loc = torch.empty(sampling_locations.shape, dtype=torch.float32, device=value.device)
    grad_attn = torch.empty(attention_weights.shape, dtype=torch.float32, device=value.device)
    grid, sizes, meta = _launch_meta(value, sampling_locations, BLOCK_Q_BWD)
    with _device_guard(value):
        _msda_bwd_kernel[grid](
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            grad_out,
            grad_value,
            grad_loc,
            grad_attn,
            *sizes,
            **meta,
        )
    return grad_value, grad_loc, grad_attn


class MSDeformAttnTriton(torch.autograd.Function):
    """Autograd wrapper: saves the inputs, recomputes the corners in the backward."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        value = value.contiguous()
        spatial_shapes = spatial_shapes.contiguous()
        level_start_index = level_start_index.contiguous()
        sampling_locations = sampling_locations.contiguous()
        attention_weights = attention_weights.contiguous()
        out = msda_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        n, lq, heads, dim = out.shape
        return out.view(n, lq, heads * dim)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        n, _, heads, dim = value.shape
        grad_output = grad_output.contiguous().view(n, -1, heads, dim)
        grad_value, grad_loc, grad_attn = msda_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output
        )
        need = ctx.needs_input_grad
        return (
            grad_value.to(value.dtype) if need[0] else None,
            None,
            None,
            grad_loc.to(sampling_locations.dtype) if need[3] else None,
            grad_attn.to(attention_weights.dtype) if need[4] else None,
        )
