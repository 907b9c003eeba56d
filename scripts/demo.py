#!/usr/bin/env python
"""The quickstart's main job on the embedded synthetic data (what `make demo` runs)."""
from pathlib import Path

from posenet import cli, quickstart

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic_small.yaml"


def main():
    parser = cli.config_parser(__doc__, config_required=False)
    parser.set_defaults(config=str(DEFAULT_CONFIG))
    _, cfg = cli.parse_config_args(parser)
    quickstart.run(cfg)


if __name__ == "__main__":
    cli.run(main)
