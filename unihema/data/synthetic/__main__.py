"""``python -m unihema.data.synthetic --n N --out URI``: write the synthetic dataset, report records/s.

S3 settings come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY) unless --endpoint-url is given; credentials are never taken on the
command line, where they would land in shell history and process listings.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from unihema.config import StorageConfig
from unihema.data.synthetic.scenes import FOV_WIDTH_UM


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m unihema.data.synthetic",
        description="Write the synthetic hematology dataset as validated Parquet shards.",
    )
    p.add_argument("--n", type=int, help="number of records")
    p.add_argument("--out", help="output URI: a local folder or s3://bucket/prefix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=256, help="width and height in pixels (default 256)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--fov-fraction", type=float, default=0.5, help="share of field-of-view records vs cell crops")
    p.add_argument(
        "--fov-width-um",
        type=float,
        default=FOV_WIDTH_UM,
        help=f"width of a field of view in micrometres (default {FOV_WIDTH_UM:.1f}; less: fewer, larger cells)",
    )
    p.add_argument("--chunk-size", type=int, default=None, help="records per worker task (default: automatic)")
    p.add_argument("--endpoint-url", default="", help="S3 endpoint (default: $AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--region", default="", help="S3 region (default: the bucket's own)")
    p.add_argument("--overwrite", action="store_true", help="replace shards already under --out")
    p.add_argument("--check-images", action="store_true", help="also decode every PNG header while writing")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--sheet", help="also write a contact sheet PNG of a few records here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.sheet:
        from unihema.data.synthetic.preview import contact_sheet

        print(f"contact sheet: {contact_sheet(args.sheet, seed=args.seed, image_size=args.image_size)}")
    if args.n is None and args.out is None and args.sheet:
        return 0
    if args.n is None or args.out is None:
        build_parser().error("--n and --out are required (unless only --sheet is given)")

    from unihema.data.synthetic.dataset import generate_dataset

    storage = StorageConfig(endpoint_url=args.endpoint_url, region=args.region)
    manifest = generate_dataset(
        args.n,
        args.out,
        storage,
        seed=args.seed,
        image_size=args.image_size,
        workers=args.workers,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        fov_fraction=args.fov_fraction,
        fov_width_um=args.fov_width_um,
        chunk_size=args.chunk_size,
        overwrite=args.overwrite,
        check_images=args.check_images,
        progress=not args.no_progress,
    )
    t = manifest["throughput"]
    print(
        json.dumps(
            {
                "uri": args.out,
                "records": manifest["records"],
                "rejected": manifest["rejected"],
                "splits": manifest["counts"]["split"],
                "seconds": t["seconds"],
                "records_per_s": t["records_per_s"],
                "workers": t["workers"],
                "records_per_s_per_worker": round(t["records_per_s"] / t["workers"], 1),
                "records_per_cpu_s": t["records_per_cpu_s"],
            }
        )
    )
    return 1 if manifest["rejected"] else 0


if __name__ == "__main__":
    sys.exit(main())
