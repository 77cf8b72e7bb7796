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

    for name, text in (
        ("pretrain", "pre-train a backbone (MIM, MLM, ITC, ITM) on image-text pairs"),
        ("finetune", "fine-tune for retrieval or classification with model.fit"),
    ):
        job = commands.add_parser(name, help=text)
        job.add_argument("--config", help="YAML or JSON config file")
        job.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    evaluate = commands.add_parser("evaluate", help="evaluate a finetune run")
    evaluate.add_argument("--run-dir", required=True, help="folder of a finetune run")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

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
        elif args.command in ("pretrain", "finetune", "evaluate"):
            run_job(args)
        else:
            from simmim_tf.data import fetch_emoji_tarballs

            for path in fetch_emoji_tarballs(
                args.manual_dir, vendors=tuple(args.vendors)
            ):
                print(path)
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as error:
        print(f"simmim-tf: error: {error}", file=sys.stderr)
        return 2
    return 0


def run_job(args: argparse.Namespace) -> None:
    """Run `pretrain`, `finetune` or `evaluate` and print its metrics."""
    import pathlib

    from simmim_tf import workflows
    from simmim_tf.evaluation.report import print_table
    from simmim_tf.training import load_config

    if args.command == "evaluate":
        run_dir = pathlib.Path(args.run_dir)
        config = load_config(
            run_dir / "config.yaml", args.set, defaults=workflows.DEFAULT_CONFIG
        )
        metrics = workflows.evaluate_run(run_dir, config)
    else:
        config = load_config(args.config, args.set, defaults=workflows.DEFAULT_CONFIG)
        if args.command == "pretrain":
            result = workflows.run_pretrain(config)
            print(f"pre-trained backbone: {result['backbone']}")
            return
        metrics = workflows.run_finetune(config)["metrics"]
    print_table(
        {name: {"value": value} for name, value in metrics.items()}, config["run_dir"]
    )


if __name__ == "__main__":
    sys.exit(main())
