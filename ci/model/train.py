"""Train, evaluate and quantise the motor anomaly model; ship it to the anomaly-detector module.

Run (TensorFlow lives only in this pipeline's own environment, never in a device image)::

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install -r ci/model/requirements.txt
    /tmp/tfenv/bin/python ci/model/train.py

Steps: generate a labelled dataset with the motor-sensor simulator through the fft-filter's feature
code (``motor_dataset.py``); split it by episode (held-out episodes never seen in training); normalise
with the healthy training windows' mean/std; train the design's network (4 inputs, dense 60-30-10-1,
ReLU, sigmoid output); convert to a full-integer TFLite model (int8 weights, activations, input and
output; calibrated with a representative dataset) and to a float TFLite model; evaluate the Keras
model and both TFLite models through LiteRT (the runtime the device uses, via the module's own
``LoadedModel``) on the held-out set; write

- ``modules/anomaly-detector/anomaly_detector/models/motor-v1.tflite`` (int8, shipped) and ``.json``
  (version, sha256, feature order, normalisation, quantisation, metrics),
- ``ci/model/artifacts/motor-v1-float.tflite`` and ``.json`` (the float model, for comparison),
- ``tests/unit/modules/data/wrong-shape.tflite`` (a valid int8 model with 5 inputs: the hot-swap
  tests' "wrong shape" case),
- ``ci/model/report.md`` (the evaluation report).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import motor_dataset as ds  # noqa: E402
from anomaly_detector.inputs import MOTOR_FEATURES, InputSpec  # noqa: E402

REPO = ds.REPO
MODELS = REPO / "modules" / "anomaly-detector" / "anomaly_detector" / "models"
ARTIFACTS = HERE / "artifacts"
FIXTURES = REPO / "tests" / "unit" / "modules" / "data"
THRESHOLD = 0.8
CLIP = 10.0
COUNTS = {"healthy": 100, "bearing_wear": 30, "overheating": 30, "stall": 30}


def build_model(seed: int) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(4,), name="features"),
            keras.layers.Dense(60, activation="relu"),
            keras.layers.Dense(30, activation="relu"),
            keras.layers.Dense(10, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid", name="score"),
        ],
        name="motor_anomaly",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def convert(model: Any, representative: np.ndarray | None) -> bytes:
    """TFLite flatbuffer: full-integer int8 when ``representative`` is given, float32 otherwise."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:

        def samples() -> Any:
            for row in representative:
                yield [row.reshape(1, -1).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def litert_scores(content: bytes, spec: InputSpec, x_norm: np.ndarray) -> tuple[np.ndarray, float]:
    """Scores of every row through LiteRT, with the module's own loading/quantising code; mean latency."""
    from anomaly_detector.model import LoadedModel

    model = LoadedModel(content, version="eval", spec=spec, edgetpu="off")
    out = np.empty(len(x_norm))
    started = time.perf_counter()
    for i, row in enumerate(x_norm):
        out[i] = model.predict(row.astype(np.float32))
    return out, (time.perf_counter() - started) / max(1, len(x_norm))


def per_kind_recall(test: ds.Dataset, scores: np.ndarray, threshold: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for kind in ds.KINDS:
        if kind == "healthy":
            mask = test.kind == kind
            out["healthy_false_alarm_rate"] = float(np.mean(scores[mask] > threshold)) if mask.any() else 0.0
        else:
            mask = (test.kind == kind) & (test.y == 1)
            out[f"{kind}_recall"] = float(np.mean(scores[mask] > threshold)) if mask.any() else 0.0
    return out


def wrong_shape_model(seed: int) -> bytes:
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=(5,)), keras.layers.Dense(1, activation="sigmoid")])
    rng = np.random.default_rng(seed)
    return convert(model, rng.normal(size=(64, 5)).astype(np.float32))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rounded(d: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 (one linear pipeline, read top to bottom)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--windows", type=int, default=100, help="windows per episode (2 per simulated second)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the episode counts (quick runs: 0.2)")
    parser.add_argument("--version", default="1")
    parser.add_argument("--dry-run", action="store_true", help="train and report, write nothing into the repo")
    parser.add_argument(
        "--out",
        type=Path,
        help="write only the candidate, DIR/candidate.tflite and DIR/candidate.json (and report.md), nothing into "
        "the repository: ci/model/candidate.py evaluates, registers and rolls it out",
    )
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    t0 = time.time()
    counts = {k: max(2, round(v * args.scale)) for k, v in COUNTS.items()}
    episodes = ds.make_episodes(counts, args.seed, healthy_margin=1.0)
    data = ds.build(episodes, args.windows)
    print(f"dataset: {len(data)} windows from {len(episodes)} episodes in {time.time() - t0:.1f} s", file=sys.stderr)

    # Split by episode, stratified by kind: a quarter of each kind's episodes is held out.
    rng = np.random.default_rng(args.seed + 1)
    held_out: set[int] = set()
    for kind in ds.KINDS:
        ids = [i for i, e in enumerate(episodes) if e.kind == kind]
        held_out.update(rng.choice(ids, size=max(1, len(ids) // 4), replace=False).tolist())
    test_mask = np.isin(data.episode, sorted(held_out))
    train, test = data.subset(~test_mask), data.subset(test_mask)

    healthy = train.x[train.y == 0]
    mean, std = healthy.mean(axis=0), healthy.std(axis=0)
    spec = InputSpec(features=MOTOR_FEATURES, mean=tuple(map(float, mean)), std=tuple(map(float, std)), clip=CLIP)
    x_train, x_test = spec.normalize(train.x), spec.normalize(test.x)

    model = build_model(args.seed)
    pos = float(train.y.mean())
    class_weight = {0: 0.5 / (1 - pos), 1: 0.5 / pos}
    t1 = time.time()
    history = model.fit(
        x_train,
        train.y.astype(np.float32),
        epochs=args.epochs,
        batch_size=128,
        validation_split=0.0,
        class_weight=class_weight,
        shuffle=True,
        verbose=0,
    )
    train_secs = time.time() - t1
    loss = history.history["loss"][-1]
    print(f"trained {args.epochs} epochs in {train_secs:.1f} s, loss {loss:.4f}", file=sys.stderr)

    keras_scores = model.predict(x_test, verbose=0).reshape(-1)
    representative = x_train[np.random.default_rng(args.seed + 2).choice(len(x_train), 1000, replace=False)]
    int8 = convert(model, representative)
    flt = convert(model, None)
    int8_scores, int8_latency = litert_scores(int8, spec, x_test)
    float_scores, float_latency = litert_scores(flt, spec, x_test)

    evaluations: dict[str, dict[str, Any]] = {}
    for name, scores in (("keras", keras_scores), ("float_tflite", float_scores), ("int8_tflite", int8_scores)):
        evaluations[name] = {
            f"at_{THRESHOLD}": rounded(
                {**ds.metrics(test.y, scores, THRESHOLD), **per_kind_recall(test, scores, THRESHOLD)}
            ),
            "at_0.5": rounded(ds.metrics(test.y, scores, 0.5)),
        }
    delays = ds.detection_delays(test, episodes, int8_scores, THRESHOLD)
    agreement = {
        "max_abs_diff": round(float(np.max(np.abs(int8_scores - float_scores))), 4),
        "mean_abs_diff": round(float(np.mean(np.abs(int8_scores - float_scores))), 4),
        "decision_agreement": round(float(np.mean((int8_scores > THRESHOLD) == (float_scores > THRESHOLD))), 4),
    }

    from anomaly_detector.model import LoadedModel

    shipped = LoadedModel(int8, version=args.version, spec=spec, edgetpu="off")
    versions = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    try:
        from importlib.metadata import version as pkg_version

        versions["ai-edge-litert"] = pkg_version("ai-edge-litert")
    except Exception:  # pragma: no cover
        pass
    n_test_pos = int(test.y.sum())
    metadata: dict[str, Any] = {
        "name": "motor-anomaly",
        "version": args.version,
        "file": f"motor-v{args.version}.tflite",
        "sha256": sha256(int8),
        "sizeBytes": len(int8),
        "quantization": "full-integer int8 (weights, activations, input, output)",
        "input": shipped.input.to_json(),
        "output": shipped.output.to_json(),
        **spec.to_json(),
        "threshold": THRESHOLD,
        "architecture": "dense 4-60-30-10-1, relu, sigmoid",
        "metrics": {
            "heldOut": {"windows": len(test), "positives": n_test_pos, "negatives": len(test) - n_test_pos},
            "int8": evaluations["int8_tflite"],
            "float": evaluations["float_tflite"],
            "int8VsFloat": agreement,
            "int8Detection": delays,
        },
        "training": {
            "seed": args.seed,
            "episodes": counts,
            "windowsPerEpisode": args.windows,
            "trainWindows": len(train),
            "epochs": args.epochs,
            "versions": versions,
        },
    }
    float_meta = {
        **metadata,
        "file": f"motor-v{args.version}-float.tflite",
        "sha256": sha256(flt),
        "sizeBytes": len(flt),
        "quantization": "none (float32)",
        "input": LoadedModel(flt, version="f", spec=spec, edgetpu="off").input.to_json(),
        "output": LoadedModel(flt, version="f", spec=spec, edgetpu="off").output.to_json(),
    }
    report = render_report(
        meta=metadata,
        float_meta=float_meta,
        evaluations=evaluations,
        agreement=agreement,
        int8_latency=int8_latency,
        float_latency=float_latency,
        train_secs=train_secs,
    )
    print(report)
    if args.dry_run:
        return 0
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "candidate.tflite").write_bytes(int8)
        (args.out / "candidate.json").write_text(json.dumps(metadata, indent=2) + "\n")
        (args.out / "report.md").write_text(report)
        print(f"wrote the candidate {args.out / 'candidate.tflite'} ({len(int8)} bytes)", file=sys.stderr)
        return 0

    MODELS.mkdir(parents=True, exist_ok=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (MODELS / metadata["file"]).write_bytes(int8)
    (MODELS / f"motor-v{args.version}.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (ARTIFACTS / float_meta["file"]).write_bytes(flt)
    (ARTIFACTS / f"motor-v{args.version}-float.json").write_text(json.dumps(float_meta, indent=2) + "\n")
    (FIXTURES / "wrong-shape.tflite").write_bytes(wrong_shape_model(args.seed))
    (HERE / "report.md").write_text(report)
    print(f"wrote {MODELS / metadata['file']} ({len(int8)} bytes) and {HERE / 'report.md'}", file=sys.stderr)
    return 0


def render_report(
    *,
    meta: dict[str, Any],
    float_meta: dict[str, Any],
    evaluations: dict[str, dict[str, Any]],
    agreement: dict[str, Any],
    int8_latency: float,
    float_latency: float,
    train_secs: float,
) -> str:
    held = meta["metrics"]["heldOut"]
    key = f"at_{THRESHOLD}"
    lines = [
        f"# Motor anomaly model v{meta['version']}: evaluation report",
        "",
        "Generated by `ci/model/train.py` (do not edit by hand; retrain with the command in `ci/model/README.md`).",
        "",
        "## Data",
        "",
        f"- Simulated by `modules/motor-sensor` and featurised by `modules/fft-filter` (the module code itself): "
        f"{meta['training']['episodes']} episodes x {meta['training']['windowsPerEpisode']} windows "
        "(1024 samples at 8 kHz, 2 windows per simulated second); fault episodes start healthy and the fault "
        "begins at a random time in the first 20 s with a random severity in [0.5, 1]; load in [0.4, 1.0] and "
        "ambient 15-35 degC for fault episodes, a wider envelope for healthy ones (load 0.3-1.1, ambient 10-40 "
        "degC) so the healthy boundary lies outside the operating range.",
        f"- Split by episode: {meta['training']['trainWindows']} training windows; held out {held['windows']} windows "
        f"({held['positives']} with a fault active, {held['negatives']} without) from episodes never seen in training.",
        "- Label: 1 while a fault is active (including the first seconds of a developing fault, when its "
        "signature is still weak: overheating needs a few thermal time constants to show in temperature).",
        "",
        "## Inputs (in model order)",
        "",
        "| # | input | from the features message | transform | healthy mean | healthy std |",
        "|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(meta["features"]):
        lines.append(
            f"| {i} | `{f['name']}` ({f['unit']}) | `{'.'.join(f['path'])}` | {f['transform']} | "
            f"{meta['normalization']['mean'][i]:.4g} | {meta['normalization']['std'][i]:.4g} |"
        )
    lines += [
        "",
        f"Normalisation: `z = clip((x - mean) / std, -{CLIP:g}, {CLIP:g})` with the healthy training windows' "
        "statistics; the int8 input is then `round(z / scale + zero_point)`.",
        "",
        "## Model",
        "",
        f"- {meta['architecture']}; binary cross-entropy, Adam, {meta['training']['epochs']} epochs, "
        f"class-balanced weights; trained in {train_secs:.1f} s.",
        f"- Shipped: `motor-v{meta['version']}.tflite`, {meta['quantization']}, **{meta['sizeBytes']} bytes**, "
        f"sha256 `{meta['sha256']}`; input scale {meta['input']['scale']:.6g} zero point "
        f"{meta['input']['zeroPoint']}, output scale {meta['output']['scale']:.6g} zero point "
        f"{meta['output']['zeroPoint']}.",
        f"- Float comparison model: `ci/model/artifacts/{float_meta['file']}`, {float_meta['sizeBytes']} bytes.",
        "",
        f"## Held-out metrics (alert when score > {THRESHOLD})",
        "",
        "| model | accuracy | precision | recall | F1 | healthy false alarms | bearing_wear recall | "
        "overheating recall | stall recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("keras", "Keras (float)"), ("float_tflite", "TFLite float32"), ("int8_tflite", "TFLite int8")):
        m = evaluations[name][key]
        lines.append(
            f"| {label} | {m['accuracy']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | "
            f"{m['healthy_false_alarm_rate']:.4f} | {m['bearing_wear_recall']:.4f} | "
            f"{m['overheating_recall']:.4f} | {m['stall_recall']:.4f} |"
        )
    lines += [
        "",
        f"Per held-out episode (int8, alert when score > {THRESHOLD}): a fault episode counts as detected when an "
        "alert follows its onset; the delay is from the onset to the first alert (windows every 0.5 s).",
        "",
        "| episodes | alerted | median delay | worst delay |",
        "|---|---|---|---|",
    ]
    for kind, d in meta["metrics"]["int8Detection"].items():
        med = "-" if d["medianDelaySecs"] is None else f"{d['medianDelaySecs']:.1f} s"
        worst = "-" if d["maxDelaySecs"] is None else f"{d['maxDelaySecs']:.1f} s"
        lines.append(f"| {kind} ({d['episodes']}) | {d['alerted']} | {med} | {worst} |")
    m8 = evaluations["int8_tflite"][key]
    m5 = evaluations["int8_tflite"]["at_0.5"]
    lines += [
        "",
        f"int8 confusion at {THRESHOLD}: TP {m8['tp']}, FP {m8['fp']}, FN {m8['fn']}, TN {m8['tn']}. "
        f"At 0.5: accuracy {m5['accuracy']:.4f}, precision {m5['precision']:.4f}, recall {m5['recall']:.4f}.",
        "",
        "## int8 vs float",
        "",
        f"- Scores on the held-out set: max |int8 - float| = {agreement['max_abs_diff']}, mean = "
        f"{agreement['mean_abs_diff']}; same decision at {THRESHOLD} for {agreement['decision_agreement']:.2%} "
        "of windows.",
        f"- Mean per-inference time in this script (LiteRT, 1 thread): int8 {int8_latency * 1e6:.1f} us, "
        f"float {float_latency * 1e6:.1f} us (see `tests/bench/bench_inference.py` for p50/p99).",
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in meta["training"]["versions"].items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
