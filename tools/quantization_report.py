"""Where full int8 loses accuracy: the worst tensors of a run's int8 phone model.

    python tools/quantization_report.py --run-dir R [--model text_tower]

Runs TFLite's quantization debugger (`tf.lite.experimental.QuantizationDebugger`)
on the full-int8 conversion of one phone model of a finetune run
(`simmim-tf tflite`'s `image_tower`, `text_tower` or `classifier`), calibrated
as `simmim-tf tflite` calibrates it. For every quantised tensor it compares the
int8 value with the float one, op by op on the same float inputs, and reports
the RMSE in units of the tensor's int8 scale: about 0.3 is rounding; tens or
more mean the int8 range does not fit the values (outliers). A second table
lists the largest scales: a sentinel such as the -1e9 that masks padding
before a softmax makes a scale so coarse that every real value rounds to
zero, with a small RMSE in its own units. Writes every tensor as JSON.
"""

import argparse
import csv
import io
import json
import math
import sys

import tensorflow as tf

from simmim_tf.atomic import atomic_write_text
from simmim_tf.evaluation.report import print_table
from simmim_tf.export import load_run
from simmim_tf.tflite import (
    CALIBRATION_EXAMPLES,
    calibration_inputs,
    phone_models,
    tflite_converter,
)
from simmim_tf.training.data import load_splits
from simmim_tf.training.tasks import build_preprocessor


def tensor_errors(
    run_dir: str, model_name: str, calibration_examples: int, debug_examples: int
) -> list[dict]:
    """Every quantised tensor's op, int8 scale and RMSE in scale units, worst first."""
    model, config = load_run(run_dir)
    task = config["finetune"]["task"]
    preprocessor = build_preprocessor(config)
    models = phone_models(model, preprocessor, task)
    if model_name not in models:
        raise SystemExit(
            f"{run_dir} has no {model_name!r}; choose from {sorted(models)}."
        )
    function, specs = models[model_name]
    calibration = calibration_inputs(
        preprocessor, load_splits(config)[0]["train"], calibration_examples
    )
    owner = model if task == "classify" else model.backbone
    with tflite_converter(function, owner, specs, "full_int8", calibration) as converter:
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: (
                [example[spec.name] for spec in specs]
                for example in calibration[:debug_examples]
            ),
        )
        try:
            debugger.run()
        except RuntimeError as error:  # a debug op refusing at run time
            raise SystemExit(
                f"LiteRT could not run the instrumented int8 {model_name}, so "
                f"its tensors cannot be compared: {error}"
            ) from None
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale, mse = float(row["scale"]), float(row["mean_squared_error"])
        if scale > 0 and not math.isnan(mse):
            rows.append(
                {
                    "tensor": row["tensor_name"].split(";")[0],
                    "op": row["op_name"],
                    "int8 scale": scale,
                    "RMSE / scale": math.sqrt(mse) / scale,
                }
            )
    return sorted(rows, key=lambda r: -r["RMSE / scale"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="a finetune run folder")
    parser.add_argument("--model", default="text_tower", help="phone model name")
    parser.add_argument("--top", type=int, default=20, help="rows printed")
    parser.add_argument("--calibration-examples", type=int, default=CALIBRATION_EXAMPLES)
    parser.add_argument(
        "--debug-examples", type=int, default=20, help="training examples compared"
    )
    parser.add_argument("--json", default="quantization_report.json")
    args = parser.parse_args()
    rows = tensor_errors(
        args.run_dir, args.model, args.calibration_examples, args.debug_examples
    )
    by_scale = sorted(rows, key=lambda r: -r["int8 scale"])
    for title, ranked in (
        (f"worst RMSE of {len(rows)} tensors", rows[: args.top]),
        ("largest int8 scales", by_scale[:5]),
    ):
        print_table(
            {
                f"{i + 1}. {row['tensor'][-70:]}": {
                    "op": row["op"],
                    # Strings: the table renders floats in [0, 1] as percentages.
                    "int8 scale": f"{row['int8 scale']:.3g}",
                    "RMSE / scale": f"{row['RMSE / scale']:.1f}",
                }
                for i, row in enumerate(ranked)
            },
            f"{args.model} full int8, {title}",
            name_column="tensor",
        )
    command = "python tools/quantization_report.py " + " ".join(sys.argv[1:])
    atomic_write_text(args.json, json.dumps({"command": command, "tensors": rows}))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
