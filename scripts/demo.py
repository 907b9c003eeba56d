#!/usr/bin/env python
"""The quickstart's main job on the embedded synthetic data (what `make demo` runs); with
--config configs/openpose_synthetic_small.yaml the OpenPose family's on the same world."""
from pathlib import Path

from posenet import cli, families

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "synthetic_small.yaml"


def main():
    parser = cli.config_parser(__doc__, config_required=False)
    parser.set_defaults(config=str(DEFAULT_CONFIG))
    parser.add_argument("--update-readme", action="store_true",
                        help="rewrite this table's block in README.md or docs/ (the quickstart results)")
    args, cfg = cli.parse_config_args(parser)
    family = families.of(cfg)
    summary = family.quickstart(cfg)
    if args.update_readme:
        from posenet.bench.common import machine_info, update_generated_block

        info = machine_info("cpu")
        gpu = f", gpu {info['gpu']}" if "gpu" in info else ""
        seconds = summary["seconds"]
        header = (f"`python scripts/demo.py --update-readme` ({Path(args.config).name}) on {info.get('cpu', 'this CPU')}, "
                  f"torch {info.get('torch', '')}{gpu}: {seconds['total'] / 60:.1f} min in all (" +
                  ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if k != "total") + ").\n\n")
        section = family.block("quickstart")  # one block per model family
        home = update_generated_block(section, header + (Path(cfg.output_dir) / "results.md").read_text(), root=ROOT)
        print(f"{home.relative_to(ROOT)}: generated block '{section}' updated")


if __name__ == "__main__":
    cli.run(main)
