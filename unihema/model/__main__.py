"""Command line: ``python -m unihema.model summary|convert|inventory``.

    summary   --preset P [overrides]      trainable parameters per component (official beside it for paper)
    convert   --official CKPT --out FILE  official checkpoint -> our names (for the preset's model)
    convert   --ours CKPT --out FILE      ours -> official names
    inventory [--preset P]                map every official tensor onto the model, list what is unmatched

Models are built on the meta device here: nothing is allocated or downloaded.
"""

from __future__ import annotations

import argparse
import sys

import torch

from unihema.config import load_config

from . import convert
from .registry import build_model
from .summary import format_summary


def _model(args):
    cfg = load_config(args.preset, overrides=args.overrides)
    # Counting and renaming need shapes only: a meta-device build loads no weights.
    return cfg, build_model(cfg, device="meta")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unihema.model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("summary", "convert", "inventory"):
        p = sub.add_parser(name)
        p.add_argument("--preset", default="paper" if name != "summary" else "demo")
        p.add_argument("overrides", nargs="*", help="a.b=value config overrides")
        if name == "convert":
            src = p.add_mutually_exclusive_group(required=True)
            src.add_argument("--official", help="official Uni-Hema checkpoint to convert to our names")
            src.add_argument("--ours", help="our checkpoint to convert to official names")
            p.add_argument("--out", required=True, help=".pt/.pth or .safetensors")
    args = parser.parse_args(argv)

    if args.command == "summary":
        cfg, model = _model(args)
        print(format_summary(model, compare=args.preset == "paper"))
        return 0
    if args.command == "inventory":
        _, model = _model(args)
        print("\n".join(convert.check_inventory(model).lines()))
        return 0
    _, model = _model(args)
    if args.official:
        state, report = convert.official_to_ours(convert.load_checkpoint(args.official), model.state_dict())
    else:
        state, report = convert.ours_to_official(convert.load_checkpoint(args.ours))
    convert.save_state(state, args.out)
    print("\n".join(report.lines()))
    print(f"wrote {len(state)} tensors to {args.out}")
    return 1 if report.mismatched else 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
