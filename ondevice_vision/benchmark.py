"""`ondevice-benchmark`: every export variant of one checkpoint, compared in one table.

    ondevice-benchmark --config=CONFIG --workdir=DIR [--checkpoint=...] \
        [--variants=saved_model,float,fp16,int8,qat_int8] [--output_dir=DIR/benchmark]

For each variant (SavedModel; TFLite float32, float16 weights, int8 post-training quantization,
and int8 from the quantization-aware ranges when the checkpoint has them) it exports the model
into OUTPUT_DIR/VARIANT, scores it on the config's eval split with the evaluator ondevice-eval
uses (the same numbers as `ondevice-eval --saved_model / --tflite` on that file), times a batch
of one on this machine (median of --runs after --warmup: TFLite through LiteRT with its default
XNNPACK delegate at 1, 2 and all threads; the SavedModel through TensorFlow), and reports the
file size and, for int8 files, whether the Edge TPU check passes (export/edgetpu_ops.py).

Writes OUTPUT_DIR/benchmark.md (the markdown table, also printed), benchmark.json (the same rows)
and benchmark.png (accuracy vs 1-thread latency, a point per variant).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from ondevice_vision import cli, files

FLAGS = flags.FLAGS

VARIANTS = ("saved_model", "float", "fp16", "int8", "qat_int8")
# variant -> (ondevice-export --format, --quantization)
EXPORTS = {
    "saved_model": ("saved_model", "none"),
    "float": ("tflite", "none"),
    "fp16": ("tflite", "fp16"),
    "int8": ("tflite", "int8"),
    "qat_int8": ("tflite", "int8"),
}


def define_flags():
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).")
    flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/ inside).")
    flags.DEFINE_string("checkpoint", None, "A checkpoint prefix or directory (default: latest).")
    flags.DEFINE_list("variants", list(VARIANTS), f"Which of {', '.join(VARIANTS)} to compare.")
    flags.DEFINE_string("output_dir", None, "Where exports and results go (WORKDIR/benchmark).")
    flags.DEFINE_integer("runs", 20, "Timed batch-1 runs per variant and thread count.")
    flags.DEFINE_integer("warmup", 3, "Untimed runs first.")
    flags.DEFINE_string("input_size", None, "HEIGHT,WIDTH of the exports (ondevice-export's).")
    flags.DEFINE_integer("num_calibration_images", 100, "int8 post-training calibration images.")
    flags.DEFINE_string("calibration_dir", None, "int8: calibrate on this folder's images.")
    flags.DEFINE_enum("calibration_split", None, ["train", "eval"], "int8: calibrate on a split.")
    flags.mark_flags_as_required(["config", "workdir"])


def thread_counts() -> list[int]:
    """1, 2 and all of this machine's cores (without repeats)."""
    return sorted({1, 2, os.cpu_count() or 1})


def _median_ms(run, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 3)


def time_tflite(path: str, threads: int, runs: int, warmup: int) -> float:
    """Median ms of one `invoke` (batch 1) with LiteRT's default delegate (XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, detail["shape"]).astype(detail["dtype"])
    interpreter.set_tensor(detail["index"], image)
    return _median_ms(interpreter.invoke, runs, warmup)


def time_saved_model(exported, input_size, runs: int, warmup: int) -> float:
    """Median ms of serving_default on one uint8 image at the input size."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, *input_size, 3), dtype=np.uint8)
    return _median_ms(lambda: exported.predict(image), runs, warmup)


def directory_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def edgetpu_verdict(info) -> str:
    report = info.extra.get("edgetpu")
    if report is None:
        return "n/a (not int8)"
    if not report.get("compiles", True):
        refused = ", ".join(f"{r['op']} v{r['version']}" for r in report["version_refusals"])
        return f"no: compiler refuses {refused}"
    if report["operators_off"]:
        return f"partly: {report['operators_off']} ops on the CPU from op {report['first_off']}"
    return "yes"


def run_benchmark(
    config,
    workdir: str,
    checkpoint: str | None = None,
    variants=VARIANTS,
    output_dir: str | None = None,
    runs: int = 20,
    warmup: int = 3,
    input_size=None,
    num_calibration_images: int = 100,
    calibration_dir: str | None = None,
    calibration_split: str | None = None,
) -> dict:
    """Library entry point of the CLI: exports, scores and times every variant; writes results."""
    from ondevice_vision import tasks
    from ondevice_vision.eval.evaluate import evaluate_exported
    from ondevice_vision.export.export_info import TFLITE_FILE
    from ondevice_vision.export.exported_model import load_exported_model
    from ondevice_vision.export.main import export, label_map_and_palette, resolve_input_size
    from ondevice_vision.export.tflite import GraphArchives
    from ondevice_vision.quantization import qat

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    task = tasks.get_task(config)
    output_dir = output_dir or os.path.join(workdir, "benchmark")
    files.makedirs(output_dir)
    model, path = tasks.load_trained_model(config, workdir, checkpoint)
    label_map, palette = label_map_and_palette(config, workdir=workdir)
    state = qat.restore_for_export(config, model, path)
    if "qat_int8" in variants and state is None:
        logging.info("benchmark: %s is not quantization-aware, so there is no qat_int8 row", path)
        variants = [v for v in variants if v != "qat_int8"]
    timing_size = tuple(input_size or resolve_input_size(config, None, "tflite"))
    # float and fp16 convert the same graph: written once (tflite.GraphArchives).
    with tempfile.TemporaryDirectory(prefix="benchmark_graphs_") as graph_dir:
        graphs = GraphArchives(graph_dir)
        rows = []
        for number, variant in enumerate(variants, start=1):
            fmt, quantization = EXPORTS[variant]
            target = os.path.join(output_dir, variant)
            logging.info("benchmark %d/%d: exporting %s", number, len(variants), variant)
            start = time.perf_counter()
            export(
                config,
                model,
                label_map,
                target,
                fmt=fmt,
                quantization=quantization,
                input_size=input_size or (timing_size if fmt == "tflite" else None),
                palette=palette,
                num_calibration_images=num_calibration_images,
                overwrite=True,
                extra={"checkpoint": path, "benchmark_variant": variant},
                quantization_state=state if variant == "qat_int8" else None,
                graphs=graphs,
                calibration_dir=calibration_dir if variant == "int8" else None,
                calibration_split=calibration_split if variant == "int8" else None,
            )
            export_s = time.perf_counter() - start
            model_path = os.path.join(target, TFLITE_FILE) if fmt == "tflite" else target
            logging.info("benchmark %d/%d: evaluating %s", number, len(variants), variant)
            metrics = evaluate_exported(config, model_path)
            logging.info("benchmark %d/%d: timing %s", number, len(variants), variant)
            exported = load_exported_model(model_path)
            if fmt == "tflite":
                latency = {
                    str(t): time_tflite(model_path, t, runs, warmup) for t in thread_counts()
                }
            else:
                latency = {"tf": time_saved_model(exported, timing_size, runs, warmup)}
            row = {
                "variant": variant,
                "format": fmt,
                "quantization": quantization,
                "path": model_path,
                "size_bytes": directory_bytes(model_path),
                "metrics": {k: metrics[k] for k in task.headline_metrics},
                "latency_ms": latency,
                "edgetpu": edgetpu_verdict(exported.info),
                "export_s": round(export_s, 1),
            }
            rows.append(row)
            logging.info(
                "benchmark %d/%d: %s %s, latency %s ms",
                number,
                len(variants),
                variant,
                ", ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items()),
                latency,
            )
    result = {
        "checkpoint": path,
        "input_size": list(timing_size),
        "threads": thread_counts(),
        "runs": runs,
        "metrics": list(task.headline_metrics),
        "rows": rows,
    }
    table = markdown_table(result)
    with files.atomic_write(os.path.join(output_dir, "benchmark.md")) as f:
        f.write(table + "\n")
    files.write_json(result, os.path.join(output_dir, "benchmark.json"))
    plot(result, os.path.join(output_dir, "benchmark.png"))
    return {**result, "table": table, "output_dir": output_dir}


def markdown_table(result: dict) -> str:
    metrics = result["metrics"]
    threads = result["threads"]
    header = (
        ["variant", "size (MB)", *metrics]
        + [f"ms, {t} thread{'s' if t > 1 else ''}" for t in threads]
        + ["SavedModel ms (TF)", "Edge TPU"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["rows"]:
        latency = row["latency_ms"]
        cells = (
            [row["variant"], f"{row['size_bytes'] / 1e6:.2f}"]
            + [f"{row['metrics'][m]:.4f}" for m in metrics]
            + [f"{latency[str(t)]:.2f}" if str(t) in latency else "" for t in threads]
            + [f"{latency['tf']:.2f}" if "tf" in latency else "", row["edgetpu"]]
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: str) -> str:
    """Accuracy (the first headline metric) against batch-1 latency, a point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result["metrics"][0]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for row in result["rows"]:
        latency = row["latency_ms"].get("1", row["latency_ms"].get("tf"))
        ax.scatter(latency, row["metrics"][metric], s=40)
        ax.annotate(
            row["variant"],
            (latency, row["metrics"][metric]),
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel("batch-1 latency, ms (TFLite: 1 thread; SavedModel: TensorFlow)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs latency, input {result['input_size'][0]}x{result['input_size'][1]}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with files.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


def main(argv):
    del argv
    from ondevice_vision.configs.checks import check_config
    from ondevice_vision.sizes import parse_size

    check_config(FLAGS.config)
    result = run_benchmark(
        FLAGS.config,
        FLAGS.workdir,
        FLAGS.checkpoint,
        FLAGS.variants,
        FLAGS.output_dir,
        FLAGS.runs,
        FLAGS.warmup,
        parse_size(FLAGS.input_size),
        FLAGS.num_calibration_images,
        FLAGS.calibration_dir,
        FLAGS.calibration_split,
    )
    print(result.pop("table"))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


def run():
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
