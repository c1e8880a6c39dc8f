"""``python -m unihema.config [--preset P] [--config F] [a.b=v ...]``: print the resolved config."""

import argparse
import sys

from unihema.config import ConfigError, add_config_arguments, config_from_args
from unihema.config.core import dump_yaml


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unihema.config", description=__doc__)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    print(dump_yaml(cfg, redact=True), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
