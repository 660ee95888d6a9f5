"""The model pipeline's last step: evaluate a candidate against the registry's current model, register it
only when it is not worse, and start a rollout.

Run in Outpost's environment (numpy, LiteRT and the ``outpost`` command; no TensorFlow)::

    python ci/model/candidate.py --name motor --candidate out/motor-v1.tflite --metadata out/motor-v1.json \\
        --rollout-target "tags.site = 'plant-a'" --report model-report.md

Steps:

1. the current model: the newest registered version of ``--name`` (or ``--baseline VERSION``), pulled
   with ``outpost model pull`` (sha256 verified) with its metadata (feature order, normalisation);
2. a held-out set: fresh episodes of the motor-sensor simulator through the fft-filter's feature code
   (``motor_dataset.py``), from a seed of its own, so no window was seen in training;
3. both models scored through LiteRT with the anomaly-detector's own ``LoadedModel`` (the device's
   loading, quantising and self-test: a candidate the device could not load fails here);
4. the verdict: not worse when its F1 is at least the current model's minus ``--tolerance`` and its
   healthy false-alarm rate at most the current one's plus ``--tolerance`` (at the alert threshold);
5. if not worse: ``outpost model push`` as the next version with the evaluation in its metadata, then
   ``outpost rollout start`` when ``--rollout-target`` is given (the live gates judge latency and alert
   rates on the devices).

Exit codes: 0 registered (and rolled out), 1 refused (worse, unloadable, or a fleet error), 2 usage.
The fleet is ``--fleet``/``OUTPOST_FLEET_URL`` with ``OUTPOST_FLEET_TOKEN``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import motor_dataset as ds  # noqa: E402
from anomaly_detector.inputs import InputError, InputSpec  # noqa: E402
from anomaly_detector.model import LoadedModel, ModelError  # noqa: E402

THRESHOLD = 0.8
EVAL_COUNTS = {"healthy": 24, "bearing_wear": 8, "overheating": 8, "stall": 8}


class RefusedError(Exception):
    """The candidate is not registered (the message says why)."""


def outpost(*args: str, fleet: str | None) -> Any:
    """Run ``outpost ARGS --json`` and return its JSON output; RefusedError with its error otherwise."""
    beside = Path(sys.executable).with_name("outpost")  # the outpost of this script's own environment first
    binary = os.environ.get("OUTPOST") or (str(beside) if beside.exists() else shutil.which("outpost") or "outpost")
    command = [binary, *args, "--json"]
    if fleet:
        command += ["--fleet", fleet]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RefusedError(f"`outpost {' '.join(args[:2])}` failed: {done.stderr.strip()}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def spec_of(metadata: dict[str, Any], where: str) -> InputSpec:
    try:
        return InputSpec.from_json(metadata)
    except InputError as exc:
        raise RefusedError(f"{where}: no usable feature metadata ({exc}); push models with --metadata") from None


def held_out(seed: int, scale: float, windows: int) -> tuple[ds.Dataset, list[ds.Episode]]:
    counts = {k: max(2, round(v * scale)) for k, v in EVAL_COUNTS.items()}
    episodes = ds.make_episodes(counts, seed, healthy_margin=1.0)
    return ds.build(episodes, windows), episodes


def evaluate(content: bytes, metadata: dict[str, Any], data: ds.Dataset, where: str) -> dict[str, Any]:
    """The evaluation report's figures of one model on the held-out set."""
    spec = spec_of(metadata, where)
    try:
        model = LoadedModel(content, version=where, spec=spec, edgetpu="off")
    except ModelError as exc:
        raise RefusedError(f"{where} cannot be loaded as the device would: {exc}") from None
    x = spec.normalize(data.x)
    scores = np.array([model.predict(row.astype(np.float32)) for row in x])
    figures: dict[str, Any] = dict(ds.metrics(data.y, scores, THRESHOLD))
    for kind in ds.KINDS:
        if kind == "healthy":
            mask = data.kind == kind
            figures["healthy_false_alarm_rate"] = float(np.mean(scores[mask] > THRESHOLD)) if mask.any() else 0.0
        else:
            mask = (data.kind == kind) & (data.y == 1)
            figures[f"{kind}_recall"] = float(np.mean(scores[mask] > THRESHOLD)) if mask.any() else 0.0
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


def verdict(candidate: dict[str, Any], current: dict[str, Any], tolerance: float) -> list[str]:
    """Why the candidate is worse (empty: it is not)."""
    reasons = []
    if candidate["f1"] < current["f1"] - tolerance:
        reasons.append(f"F1 {candidate['f1']:.4f} < {current['f1']:.4f} - {tolerance:g}")
    if candidate["healthy_false_alarm_rate"] > current["healthy_false_alarm_rate"] + tolerance:
        reasons.append(
            f"healthy false alarms {candidate['healthy_false_alarm_rate']:.4f} > "
            f"{current['healthy_false_alarm_rate']:.4f} + {tolerance:g}"
        )
    return reasons


def render(evaluation: dict[str, Any]) -> str:
    rows = ["accuracy", "precision", "recall", "f1", "healthy_false_alarm_rate"] + [
        f"{k}_recall" for k in ds.KINDS if k != "healthy"
    ]
    held = evaluation["heldOut"]
    lines = [
        f"# Candidate {evaluation['candidate']['ref']} against {evaluation['current']['ref']}",
        "",
        f"Held-out set: {held['windows']} windows ({held['positives']} with a fault active) from "
        f"{held['episodes']} fresh simulated episodes (seed {held['seed']}); alert when score > {THRESHOLD}.",
        "",
        "| figure | current | candidate |",
        "|---|---|---|",
        *(
            f"| {r} | {evaluation['current']['metrics'][r]:.4f} | {evaluation['candidate']['metrics'][r]:.4f} |"
            for r in rows
        ),
        "",
        f"Verdict: **{evaluation['verdict']}** (tolerance {evaluation['tolerance']:g})"
        + ("".join(f"\n- {reason}" for reason in evaluation["reasons"])),
        "",
    ]
    return "\n".join(lines)


def next_version(models: list[dict[str, Any]], name: str) -> str:
    numbers = [int(m["version"]) for m in models if m["name"] == name and str(m["version"]).isdigit()]
    return str(max(numbers, default=0) + 1)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="registry model name, e.g. motor")
    parser.add_argument("--candidate", type=Path, required=True, help="the candidate .tflite")
    parser.add_argument("--metadata", type=Path, required=True, help="its metadata JSON (train.py writes it)")
    parser.add_argument("--baseline", help="compare with this version (default: the newest registered one)")
    parser.add_argument("--version", help="register as this version (default: the next integer)")
    parser.add_argument("--fleet", help="fleet URL (default: OUTPOST_FLEET_URL)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="how much worse F1 / false alarms may be")
    parser.add_argument("--seed", type=int, default=97_531, help="the held-out episodes' seed (not training's)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the held-out episode counts")
    parser.add_argument("--windows", type=int, default=100, help="windows per held-out episode")
    parser.add_argument("--report", type=Path, help="write the comparison (markdown) here")
    parser.add_argument("--rollout-target", help="start a rollout to this target condition once registered")
    parser.add_argument("--rollout-name", help="the rollout's name (default: NAME-vVERSION)")
    parser.add_argument("--module", default="anomaly-detector", help="the module the rollout swaps models of")
    parser.add_argument("--steps", default="5,25,50,100", help="rollout steps, percent")
    parser.add_argument("--soak", default="10m", help="rollout soak per step")
    parser.add_argument("--min-devices", type=int, default=3, help="reporting devices per cohort before gates decide")
    parser.add_argument("--gate", action="append", default=[], help="rollout gate NAME=VALUE (repeatable)")
    parser.add_argument("--approve-promotion", action="store_true", help="the rollout waits for approval to promote")
    parser.add_argument("--dry-run", action="store_true", help="evaluate and decide; register nothing")
    parser.add_argument("--json", action="store_true", help="print the evaluation as JSON on stdout")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    fleet = args.fleet
    try:
        content = args.candidate.read_bytes()
        metadata = json.loads(args.metadata.read_text())
    except (OSError, ValueError) as exc:
        raise RefusedError(f"cannot read the candidate: {exc}") from None
    if not isinstance(metadata, dict):
        raise RefusedError(f"{args.metadata}: expected a JSON object")
    models = outpost("model", "list", fleet=fleet)
    mine = [m for m in models if m["name"] == args.name]
    if not mine and args.baseline is None:
        raise RefusedError(
            f"no {args.name} model is registered to compare with; push the first one with `outpost model push`"
        )
    current_version = args.baseline or mine[-1]["version"]
    with tempfile.TemporaryDirectory() as tmp:
        pulled = Path(tmp) / "current.tflite"
        current = outpost("model", "pull", f"{args.name}@{current_version}", "-o", str(pulled), fleet=fleet)
        current_content = pulled.read_bytes()
    data, episodes = held_out(args.seed, args.scale, args.windows)
    version = args.version or next_version(models, args.name)
    evaluation: dict[str, Any] = {
        "heldOut": {"windows": len(data), "positives": int(data.y.sum()), "episodes": len(episodes), "seed": args.seed},
        "current": {"ref": f"{args.name}@{current_version}", "sha256": current["sha256"],
                    "metrics": evaluate(current_content, current["metadata"], data, f"{args.name}@{current_version}")},
        "candidate": {"ref": f"{args.name}@{version}", "sha256": hashlib.sha256(content).hexdigest(),
                      "metrics": evaluate(content, metadata, data, "the candidate")},
        "tolerance": args.tolerance,
        "threshold": THRESHOLD,
    }  # fmt: skip
    reasons = verdict(evaluation["candidate"]["metrics"], evaluation["current"]["metrics"], args.tolerance)
    evaluation["verdict"] = "worse" if reasons else "not worse"
    evaluation["reasons"] = reasons
    if args.report:
        args.report.write_text(render(evaluation))
    if reasons:
        raise RefusedError(
            f"the candidate is worse than {args.name}@{current_version}: {'; '.join(reasons)}; not registered"
        )
    if args.dry_run:
        return evaluation
    registered = {**metadata, "version": version, "sha256": evaluation["candidate"]["sha256"], "evaluation": evaluation}
    with tempfile.TemporaryDirectory() as tmp:
        meta_file = Path(tmp) / "metadata.json"
        meta_file.write_text(json.dumps(registered))
        push = ["model", "push", str(args.candidate), "--name", args.name, "--version", version]
        evaluation["registered"] = outpost(*push, "--metadata", str(meta_file), fleet=fleet)
    if args.rollout_target:
        start = ["rollout", "start", args.rollout_name or f"{args.name}-v{version}", "--target", args.rollout_target,
                 "--module", args.module, "--model", f"{args.name}@{version}", "--steps", args.steps,
                 "--soak", args.soak, "--min-devices", str(args.min_devices)]  # fmt: skip
        for gate in args.gate:
            start += ["--gate", gate]
        if args.approve_promotion:
            start.append("--approve-promotion")
        evaluation["rollout"] = outpost(*start, fleet=fleet)["name"]
    return evaluation


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        evaluation = run(args)
    except RefusedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(evaluation, indent=2))
    done = "evaluated (dry run)" if args.dry_run else f"registered {evaluation['candidate']['ref']}"
    rollout = f"; rollout {evaluation['rollout']} started" if evaluation.get("rollout") else ""
    print(f"{done}: not worse than {evaluation['current']['ref']}{rollout}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
