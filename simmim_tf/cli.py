"""`simmim-tf`: the command line.

simmim-tf demo                      train + compare on the bundled sample
simmim-tf data fetch --manual-dir D fetch the full emoji tarballs with npm
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `simmim-tf` console script."""
    parser = argparse.ArgumentParser(
        prog="simmim-tf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="train SimMIM and the baseline, print a table"
    )
    demo.add_argument(
        "--manual-dir", help="folder of npm tarballs (default: bundled sample)"
    )
    demo.add_argument("--data-dir", help="TFDS data folder")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=20)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--label", default="subgroup", choices=("subgroup", "group"))
    demo.add_argument("--seed", type=int, default=0)

    data = commands.add_parser("data", help="data set commands")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", help="fetch the emoji npm tarballs")
    fetch.add_argument("--manual-dir", required=True, help="where the tarballs go")
    fetch.add_argument("--vendors", nargs="+", default=["twitter", "google"])

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from simmim_tf.demo import run_demo

            run_demo(
                manual_dir=args.manual_dir,
                data_dir=args.data_dir,
                output_dir=args.output_dir,
                epochs=args.epochs,
                batch_size=args.batch_size,
                label_key=args.label,
                seed=args.seed,
            )
        else:
            from simmim_tf.data import fetch_emoji_tarballs

            for path in fetch_emoji_tarballs(
                args.manual_dir, vendors=tuple(args.vendors)
            ):
                print(path)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        print(f"simmim-tf: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
