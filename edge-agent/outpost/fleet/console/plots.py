"""The console's plots, drawn on the server by matplotlib as SVG documents.

Served as images (``<img src=...svg>``), so the pages' Content-Security-Policy stays as strict as it
is: no third-party script runs in the console, and an SVG loaded as an image runs none either.
Names come from devices (metric paths): they are drawn as plain text (``parse_math=False``),
never as matplotlib's mathtext. Called by :mod:`outpost.fleet.adapters.console`.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import matplotlib as mpl
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

__all__ = ["MAX_PANELS", "latency_svg", "metrics_svg", "ordered"]

MAX_PANELS = 12
FIRST = ("score", "alert", "latency")
"""Metrics whose name holds one of these come first: what an operator of the detector looks at."""
TREATMENT, CONTROL = "#d6791f", "#2f6db5"
_LOCK = threading.Lock()  # matplotlib's font cache and rcParams are process-wide
_STYLE: dict[Any, Any] = {"svg.fonttype": "none", "svg.hashsalt": "outpost", "font.size": 9, "axes.titlesize": 9}


def ordered(names: Sequence[str]) -> list[str]:
    """Scores, alerts and latencies first (in that order), then the rest by name."""

    def rank(name: str) -> tuple[int, str]:
        lowered = name.lower()
        return next((i for i, word in enumerate(FIRST) if word in lowered), len(FIRST)), name

    return sorted(names, key=rank)


def _svg(figure: Figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    return out.getvalue()


def metrics_svg(series: Mapping[str, Sequence[tuple[float, float]]], device_id: str) -> bytes:
    """One small panel per metric (at most :data:`MAX_PANELS`), value against time (UTC)."""
    names = ordered(list(series))[:MAX_PANELS]
    with _LOCK, mpl.rc_context(_STYLE):
        if not names:
            figure = Figure(figsize=(6, 1.2))
            figure.text(0.5, 0.5, f"{device_id} has reported no numbers yet", ha="center", va="center",
                        parse_math=False)  # fmt: skip
            return _svg(figure)
        columns = 2 if len(names) > 1 else 1
        rows = -(-len(names) // columns)
        figure = Figure(figsize=(5.6 * columns, 2.1 * rows), layout="constrained")
        axes = figure.subplots(rows, columns, squeeze=False)
        for index, ax in enumerate(axes.flat):
            if index >= len(names):
                ax.set_visible(False)
                continue
            name = names[index]
            points = series[name]
            times = [datetime.fromtimestamp(at, UTC) for at, _ in points]
            values = [value for _, value in points]
            ax.plot(times, values, marker="o" if len(points) < 30 else None, markersize=3, linewidth=1.2,
                    color="#2f6db5")  # fmt: skip
            ax.set_title(f"{name} (last {values[-1]:g})", loc="left", parse_math=False)
            if times[-1] == times[0]:  # one instant: give the axis a minute either side
                at = points[0][0]
                ax.set_xlim(datetime.fromtimestamp(at - 60, UTC), datetime.fromtimestamp(at + 60, UTC))
            locator = AutoDateLocator(minticks=3, maxticks=6)  # type: ignore[no-untyped-call]
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
            ax.grid(alpha=0.3)
        return _svg(figure)


def latency_svg(treatment: Sequence[float], control: Sequence[float], *, title: str) -> bytes:
    """Per-device inference latency of both cohorts: histograms on a shared scale and box plots."""
    with _LOCK, mpl.rc_context(_STYLE):
        figure = Figure(figsize=(9, 2.8), layout="constrained")
        hist, box = figure.subplots(1, 2, width_ratios=[2, 1])
        cohorts = [(f"treatment ({len(treatment)})", list(treatment), TREATMENT),
                   (f"control ({len(control)})", list(control), CONTROL)]  # fmt: skip
        values = [v for _, data, _ in cohorts for v in data]
        if not values:
            hist.text(0.5, 0.5, "no device reported an inference latency in this step yet", ha="center",
                      va="center", transform=hist.transAxes)  # fmt: skip
            box.set_visible(False)
        else:
            low, high = min(values), max(values)
            bins = [low + (high - low) * i / 20 for i in range(21)] if high > low else 10
            for label, data, color in cohorts:
                if data:
                    hist.hist(data, bins=bins, histtype="step", linewidth=1.6, color=color, label=label)
            hist.set_xlabel("inference latency p50 per device, ms")
            hist.set_ylabel("devices")
            hist.legend(loc="upper right")
            present = [(label, data, color) for label, data, color in cohorts if data]
            parts = box.boxplot([d for _, d, _ in present], orientation="horizontal", patch_artist=True,
                                tick_labels=[label.split(" ")[0] for label, _, _ in present])  # fmt: skip
            for patch, (_, _, color) in zip(parts["boxes"], present, strict=True):
                patch.set_facecolor(color)
                patch.set_alpha(0.5)
            box.set_xlabel("ms")
        hist.set_title(title, loc="left", parse_math=False)
        return _svg(figure)
