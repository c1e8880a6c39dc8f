"""Benchmark the attention and deformable-attention backends on the paper's shapes.

Why: every fused kernel in ``unihema.ops`` must earn its place against the PyTorch
reference it replaces, on the shapes Uni-Hema actually runs, and the dispatcher's "auto"
choice must never lose to the reference. This script measures, for every backend that can
run on the current device: forward and forward+backward time (median after warm-up, CUDA
events on GPU), achieved TFLOP/s, peak extra memory, the speed-up over the reference, and
which backend "auto" picks; plus a matmul TFLOP/s figure to compare the kernels with.

    python benchmarks/kernel_bench.py            # paper shapes (GPU; bf16)
    python benchmarks/kernel_bench.py --quick    # small shapes, CPU in under two minutes (fp32)

Writes ``benchmarks/results/kernels-<device>-<torch version>[-quick].json`` and prints a
Markdown table.

Paper shapes: 800x1333 input -> four levels 100x167, 50x84, 25x42, 13x21 (22,223 tokens);
batch 12; d_model 256 with 8 heads (head_dim 32); 900 decoder queries; Q-Former with 64
queries over the encoder tokens and over 64 text tokens; FLAN-T5 side d768 with 12 heads
(head_dim 64), 64 tokens, relative-position bias and no score scaling. ``--quick`` uses the
same structure for a 200x333 input (levels 25x42, 13x21, 7x11, 4x6), batch 2, 300 queries.

Counting: attention forward = 4*B*H*Lq*Lk*D FLOPs (padded keys included, causal not
halved), backward = 2.5x forward. Deformable attention forward = 10*D FLOPs per sampled
point and channel (4 bilinear corners + the attention weight, multiply-add each), backward
= 2x forward. Memory: peak bytes allocated during the call beyond what was allocated before
it. On CUDA that is ``torch.cuda.max_memory_allocated``; on CPU tracemalloc does not see
torch's allocator and ru_maxrss only moves when a new process-wide high is reached, so we
replay the call under ``torch.profiler`` with ``profile_memory=True`` and take the peak of
the running sum of its allocation/free events (falling back to the ru_maxrss delta).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from unihema.ops import (  # noqa: E402 - needs the repo on sys.path when run as a script
    attention,
    check_attention_backends,
    check_ms_deform_attn_backends,
    choose_attention_backend,
    choose_ms_deform_attn_backend,
    ms_deform_attn,
)

PAPER_LEVELS = [(100, 167), (50, 84), (25, 42), (13, 21)]
QUICK_LEVELS = [(25, 42), (13, 21), (7, 11), (4, 6)]
NO_GPU = "no GPU in this session"


# --------------------------------------------------------------------------- cases


def attention_cases(quick: bool):
    """name -> (batch, q_len, kv_len, heads, head_dim, padding, bias, scale, note)."""
    tokens = sum(h * w for h, w in (QUICK_LEVELS if quick else PAPER_LEVELS))
    batch, queries = (2, 300) if quick else (12, 900)
    return {
        "decoder_self": (batch, queries, queries, 8, 32, False, False, None, f"{queries} queries self-attention"),
        "qformer_image": (batch, 64, tokens, 8, 32, True, False, None, f"64 queries over {tokens} padded image tokens"),
        "qformer_text": (batch, 64, 64, 8, 32, True, False, None, "64 queries over 64 padded text tokens"),
        "t5_self": (batch, 64, 64, 12, 64, True, True, 1.0, "T5 d768/12 heads, 64 tokens, position bias, scale 1"),
        # Dense global attention over all encoder tokens (batch 1): the long-sequence case a
        # fused kernel is for; the model's encoder itself is deformable (see msda_encoder).
        "encoder_dense": (1, tokens, tokens, 8, 32, True, False, None, f"dense self-attention over {tokens} tokens"),
    }


def msda_cases(quick: bool):
    """name -> (batch, levels, queries, heads, head_dim, points, note)."""
    levels = QUICK_LEVELS if quick else PAPER_LEVELS
    tokens = sum(h * w for h, w in levels)
    batch, queries = (2, 300) if quick else (12, 900)
    return {
        "msda_encoder": (batch, levels, tokens, 8, 32, 4, f"{tokens} queries over 4 levels, 4 points"),
        "msda_decoder": (batch, levels, queries, 8, 32, 4, f"{queries} queries over 4 levels, 4 points"),
    }


def make_attention(batch, q_len, kv_len, heads, dim, padding, bias, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, n, heads, dim, generator=gen) for n in (q_len, kv_len, kv_len))
    kw = {}
    if padding:
        # Image batches are padded to the largest image: keep 75-100% of the keys.
        lengths = (kv_len * (0.75 + 0.25 * torch.rand(batch, generator=gen))).long().clamp(min=1)
        kw["key_padding_mask"] = (torch.arange(kv_len)[None, :] >= lengths[:, None]).to(device)
    if bias:
        kw["attn_bias"] = torch.randn(1, heads, q_len, kv_len, generator=gen).to(device, dtype)
    return [t.to(device, dtype) for t in (q, k, v)], kw


def make_msda(batch, levels, queries, heads, dim, points, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(levels, dtype=torch.long)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(batch, int(sizes.sum()), heads, dim, generator=gen)
    locations = torch.rand(batch, queries, heads, len(levels), points, 2, generator=gen)
    weights = torch.rand(batch, queries, heads, len(levels), points, generator=gen).softmax(-1)
    return [
        value.to(device, dtype),
        shapes.to(device),
        starts.to(device),
        locations.to(device, dtype),
        weights.to(device, dtype),
    ]


# --------------------------------------------------------------------------- measuring


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns, device, warmup, repeats, budget_s):
    """Seconds per call of each fn, one sample per round, timing them round-robin after warm-up.

    Round-robin makes the ratios between backends robust to load from other processes (the
    CPU machines here are shared): a burst of interference hits the calls of one round alike,
    so the per-round ratios are compared (see ``measure``). Slow calls get fewer rounds so one
    measurement stays within ``budget_s``.
    """
    first = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        sync(device)
        first[name] = timed_call(fn, device)
    rounds = max(2, min(repeats, int(budget_s / max(sum(first.values()), 1e-9))))
    samples = {name: [t] for name, t in first.items()}
    for _ in range(rounds - 1):
        for name, fn in fns.items():
            samples[name].append(timed_call(fn, device))
    return samples


def timed_call(fn, device) -> float:
    """Seconds of one call: CUDA events on GPU (device time, no host launch jitter), else wall clock."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def _cpu_peak_profiler(fn):
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []

    def walk(node):
        if node.tag == _EventType.Allocation and str(node.extra_fields.device) == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    events.sort()
    return max(itertools.accumulate(size for _, size in events), default=0)


def peak_bytes(fn, device):
    """(peak extra bytes during one call, method)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base, "torch.cuda.max_memory_allocated"
    try:
        return max(_cpu_peak_profiler(fn), 0), "torch.profiler allocation events"
    except Exception:  # noqa: BLE001 - private profiler API; fall back to the coarse measure
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, "ru_maxrss delta"


def measure(makers, flops_fwd, bwd_factor, device, args, reference):
    """Time and peak memory of forward and forward+backward for each backend in ``makers``.

    ``makers`` maps backend name -> () -> (inputs, call); each backend gets its own inputs.
    ``ms`` is the median time; ``x_reference`` the median over rounds of the reference's
    time divided by the backend's time in the same round.
    """
    calls, rows = {}, {}
    for name, make_fn in makers.items():
        try:
            inputs, call = make_fn()
            leaves = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
            grad_out = torch.randn_like(call(leaves))
        except torch.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            rows[name] = {"skipped": f"out of memory: {str(exc).splitlines()[0]}"}
            continue

        def forward(call=call, leaves=leaves):
            with torch.no_grad():
                call(leaves)

        def forward_backward(call=call, leaves=leaves, grad_out=grad_out):
            torch.autograd.grad(call(leaves), [t for t in leaves if t.is_floating_point()], grad_out)

        calls[name] = {"fwd": forward, "fwd_bwd": forward_backward}
        rows[name] = {}
    for mode, flops in (("fwd", flops_fwd), ("fwd_bwd", flops_fwd * (1 + bwd_factor))):
        fns = {name: c[mode] for name, c in calls.items() if "skipped" not in rows[name]}
        try:
            times = time_interleaved(fns, device, args.warmup, args.repeats, args.budget)
        except torch.OutOfMemoryError:
            # One backend (the reference, typically) does not fit: time the others alone.
            torch.cuda.empty_cache()
            times = {}
            for name, fn in fns.items():
                try:
                    times.update(time_interleaved({name: fn}, device, args.warmup, args.repeats, args.budget))
                except torch.OutOfMemoryError as exc:
                    torch.cuda.empty_cache()
                    rows[name] = {"skipped": f"out of memory in {mode}: {str(exc).splitlines()[0]}"}
        for name, samples in times.items():
            if "skipped" in rows[name]:
                continue
            seconds = statistics.median(samples)
            peak, method = peak_bytes(fns[name], device)
            rows[name][mode] = {"ms": seconds * 1e3, "tflops": flops / seconds / 1e12, "peak_mib": peak / 2**20}
            if reference in times:
                ratios = [r / t for r, t in zip(times[reference], samples)]
                rows[name][mode]["x_reference"] = statistics.median(ratios)
            rows[name]["memory_method"] = method
    return rows


def matmul_tflops(device, dtype, n, args):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = time_interleaved({"mm": lambda: a @ b}, device, args.warmup, args.repeats, args.budget)
    seconds = statistics.median(times["mm"])
    return 2 * n**3 / seconds / 1e12


# --------------------------------------------------------------------------- suites


def bench_attention(device, dtype, args, log):
    results = {}
    for name, (b, lq, lk, h, d, padding, bias, scale, note) in attention_cases(args.quick).items():
        (q, k, v), kw = make_attention(b, lq, lk, h, d, padding, bias, device, dtype)
        checks = check_attention_backends(q, k, v, scale=scale, **kw)
        case = {
            "shape": dict(batch=b, q_len=lq, kv_len=lk, heads=h, head_dim=d),
            "mask": sorted(kw),
            "note": note,
            "auto": choose_attention_backend(q, k, v, **kw),
            "backends": {},
        }
        makers = {}
        for check in checks:
            if not check.ok:
                case["backends"][check.name] = {"skipped": check.reason}
                continue

            def make_fn(backend=check.name, b=b, lq=lq, lk=lk, h=h, d=d, padding=padding, bias=bias, scale=scale):
                (q, k, v), kw = make_attention(b, lq, lk, h, d, padding, bias, device, dtype)
                return [q, k, v], lambda t: attention(*t, scale=scale, backend=backend, **kw)

            makers[check.name] = make_fn
        log(f"attention {name}: {', '.join(makers)}")
        case["backends"].update(measure(makers, 4.0 * b * h * lq * lk * d, 2.5, device, args, "math"))
        results[name] = case
    return results


def bench_msda(device, dtype, args, log):
    results = {}
    for name, (b, levels, lq, h, d, p, note) in msda_cases(args.quick).items():
        inputs = make_msda(b, levels, lq, h, d, p, device, dtype)
        case = {
            "shape": dict(batch=b, levels=levels, queries=lq, heads=h, head_dim=d, points=p),
            "note": note,
            "auto": choose_ms_deform_attn_backend(*inputs),
            "backends": {},
        }
        makers = {}
        for check in check_ms_deform_attn_backends(*inputs):
            if not check.ok:
                case["backends"][check.name] = {"skipped": check.reason}
                continue

            def make_fn(backend=check.name, b=b, levels=levels, lq=lq, h=h, d=d, p=p):
                return make_msda(b, levels, lq, h, d, p, device, dtype), lambda t: ms_deform_attn(*t, backend=backend)

            makers[check.name] = make_fn
        log(f"ms_deform_attn {name}: {', '.join(makers)}")
        flops = 10.0 * b * lq * h * len(levels) * p * d
        case["backends"].update(measure(makers, flops, 2.0, device, args, "reference"))
        results[name] = case
    return results


# --------------------------------------------------------------------------- targets


def evaluate_targets(report):
    on_gpu = report["device"]["type"] == "cuda"
    att, msda = report["attention"], report["ms_deform_attn"]
    targets = []

    def auto_row(case):
        return case["backends"].get(case["auto"], {})

    if on_gpu:
        rate = report["matmul_tflops"]["bfloat16"]
        for name in ("qformer_image", "encoder_dense"):
            row = auto_row(att[name])
            if "fwd" not in row:
                targets.append(
                    dict(
                        target=f"GPU {name}: auto >= 50% bf16 matmul and >= 3x math",
                        met=False,
                        detail=row.get("skipped", "no result"),
                    )
                )
                continue
            frac = row["fwd_bwd"]["tflops"] / rate
            math_row = att[name]["backends"].get("math", {})
            if "skipped" in math_row:  # the reference cannot run this shape at all
                fast, vs_math = True, f"math: {math_row['skipped']}"
            else:
                xs = [row[m].get("x_reference", 0.0) for m in ("fwd", "fwd_bwd")]
                fast, vs_math = min(xs) >= 3, "x math fwd {:.2f}, fwd+bwd {:.2f}".format(*xs)
            targets.append(
                dict(
                    target=f"GPU {name}: auto >= 50% bf16 matmul and >= 3x math",
                    met=frac >= 0.5 and fast,
                    detail=f"{att[name]['auto']}: {frac:.0%} of matmul (fwd+bwd), {vs_math}",
                )
            )
        for name, case in msda.items():
            tri, ref = case["backends"].get("triton", {}), case["backends"].get("reference", {})
            if "fwd_bwd" not in tri or "fwd_bwd" not in ref:
                targets.append(
                    dict(
                        target=f"GPU {name}: triton >= 3x reference fwd+bwd, lower peak memory",
                        met=False,
                        detail=tri.get("skipped") or ref.get("skipped") or "no result",
                    )
                )
                continue
            x = tri["fwd_bwd"]["x_reference"]
            lower = tri["fwd_bwd"]["peak_mib"] < ref["fwd_bwd"]["peak_mib"]
            targets.append(
                dict(
                    target=f"GPU {name}: triton >= 3x reference fwd+bwd, lower peak memory",
                    met=x >= 3 and lower,
                    detail=f"x{x:.2f}, peak {tri['fwd_bwd']['peak_mib']:.0f} vs {ref['fwd_bwd']['peak_mib']:.0f} MiB",
                )
            )
    else:
        targets.append(
            dict(
                target="H100: auto for encoder/Q-Former shapes >= 50% bf16 matmul and >= 3x math",
                met=None,
                detail=NO_GPU,
            )
        )
        targets.append(
            dict(target="H100: Triton MSDA >= 3x reference fwd+bwd with lower peak memory", met=None, detail=NO_GPU)
        )
        worst = min(
            (auto_row(case)[mode]["x_reference"], f"{name} {mode}")
            for name, case in att.items()
            for mode in ("fwd", "fwd_bwd")
        )
        targets.append(
            dict(
                target="CPU: attention auto never slower than math",
                met=worst[0] >= 1.0,
                detail=f"lowest speed-up of auto over math x{worst[0]:.2f} ({worst[1]})",
            )
        )
    return targets


# --------------------------------------------------------------------------- output


def environment(device, args):
    def version(module):
        try:
            return __import__(module).__version__
        except Exception:  # noqa: BLE001 - optional extras
            return None

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as info:
                name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
        except (OSError, StopIteration):
            pass

    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD") + ("+uncommitted" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "device": {"type": device.type, "name": name, "cpu_threads": torch.get_num_threads()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "triton": version("triton"),
            "flash_attn": version("flash_attn"),
            "xformers": version("xformers"),
        },
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "git_commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "paper",
    }


def slug(text):
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def _ratio(cell):
    return f"{cell['x_reference']:.2f}" if "x_reference" in cell else "n/a"


def table(report):
    lines = [
        "| kernel | case | backend | fwd ms | fwd+bwd ms | fwd TFLOP/s | fwd+bwd TFLOP/s | peak MiB fwd "
        "| peak MiB fwd+bwd | x ref fwd | x ref fwd+bwd |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kernel in ("attention", "ms_deform_attn"):
        for name, case in report[kernel].items():
            for backend, row in case["backends"].items():
                label = f"{backend} (auto)" if backend == case["auto"] else backend
                if "skipped" in row:
                    continue
                f, fb = row["fwd"], row["fwd_bwd"]
                lines.append(
                    f"| {kernel} | {name} | {label} | {f['ms']:.2f} | {fb['ms']:.2f} | {f['tflops']:.3f} | "
                    f"{fb['tflops']:.3f} | {f['peak_mib']:.1f} | {fb['peak_mib']:.1f} | "
                    f"{_ratio(f)} | {_ratio(fb)} |"
                )
    rates = ", ".join(f"{k} {v:.3f}" for k, v in report["matmul_tflops"].items())
    lines.append(f"\nMatmul TFLOP/s ({report['matmul_size']}^3): {rates}.")
    for t in report["targets"]:
        if t["met"] is None:
            lines.append(f"- {t['target']}: not measured: {t['detail']}")
        else:
            lines.append(f"- {t['target']}: **{'met' if t['met'] else 'NOT met'}** ({t['detail']})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes; runs on CPU in under two minutes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds of timed calls per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    args.repeats = args.repeats if args.repeats is not None else (200 if args.quick else 100)
    args.budget = args.budget if args.budget is not None else (1.5 if args.quick else 3.0)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # bf16 is what the model trains in on GPUs; CPUs run it in fp32.
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    report = environment(device, args)
    report["dtype"] = str(dtype).removeprefix("torch.")
    size = 1024 if args.quick else 8192
    report["matmul_size"] = size
    report["matmul_tflops"] = {
        str(dt).removeprefix("torch."): matmul_tflops(device, dt, size, args) for dt in (torch.bfloat16, torch.float32)
    }
    report["attention"] = bench_attention(device, dtype, args, log)
    report["ms_deform_attn"] = bench_msda(device, dtype, args, log)
    report["targets"] = evaluate_targets(report)
    report["seconds"] = round(time.perf_counter() - start, 1)

    device_slug = "cpu" if device.type == "cpu" else slug(report["device"]["name"])
    suffix = "-quick" if args.quick else ""
    torch_version = torch.__version__.split("+")[0]
    out = args.out or REPO / "benchmarks" / "results" / f"kernels-{device_slug}-{torch_version}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{report['device']['name']} ({device.type}, {report['dtype']}), torch {torch.__version__}, "
        f"triton {report['versions']['triton']}; {report['command']}; {report['seconds']} s\n"
    )
    print(table(report))
    print(f"\nwrote {os.path.relpath(out, Path.cwd())}")


if __name__ == "__main__":
    main()
