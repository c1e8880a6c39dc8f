"""Run the Triton deformable-attention kernels in Triton's CPU interpreter for the tests.

Started by ``test_msda_triton.py`` as a subprocess with ``TRITON_INTERPRET=1`` in its
environment (Triton reads the variable when ``@triton.jit`` runs, so it must be set before
the kernel module is imported; a fresh process is the only place that is guaranteed).
Usage: ``python msda_interpret_worker.py CASES.pt RESULTS.pt``. CASES holds inputs only;
the oracle (the grid_sample reference) runs in the pytest process, not here, so a bug in
the interpreter setup cannot make kernel and oracle agree by accident.

Each case is a dict with ``kind`` "function" (inputs for ``ms_deform_attn``) or "module"
(an ``MSDeformAttn`` config, state_dict and forward inputs), plus ``grad_out``. Results
map case name to {"out", "grads"} or {"error": traceback}.
"""

from __future__ import annotations

import sys
import traceback

import torch


def _leaf(t):
    return t.detach().clone().requires_grad_() if t.is_floating_point() else t


def run_function(case):
    from unihema.ops import ms_deform_attn

    inputs = [_leaf(t) for t in case["inputs"]]
    out = ms_deform_attn(*inputs, backend="triton")
    wrt = [inputs[0], inputs[3], inputs[4]]
    grads = torch.autograd.grad(out, wrt, case["grad_out"])
    return {"out": out.detach(), "grads": [g.detach() for g in grads]}


def run_module(case):
    from unihema.ops import MSDeformAttn

    module = MSDeformAttn(**case["config"], backend="triton")
    module.load_state_dict(case["state_dict"])
    inputs = {k: _leaf(v) if k in ("query", "input_flatten") else v for k, v in case["inputs"].items()}
    out = module(**inputs)
    wrt = [inputs["query"], inputs["input_flatten"]] + [p for _, p in sorted(module.named_parameters())]
    grads = torch.autograd.grad(out, wrt, case["grad_out"])
    return {"out": out.detach(), "grads": [g.detach() for g in grads]}


def main(cases_path: str, results_path: str) -> None:
    from unihema.ops import ms_deform_attn_triton

    cases = torch.load(cases_path)
    results = {"__interpreted__": ms_deform_attn_triton.INTERPRETED}
    for name, case in cases.items():
        try:
            runner = run_function if case["kind"] == "function" else run_module
            results[name] = runner(case)
        except Exception:  # noqa: BLE001 - report per case; the test shows the traceback
            results[name] = {"error": traceback.format_exc()}
    torch.save(results, results_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
