"""Markdown pieces shared by the evaluation reports and model cards."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def pct(value: float | None) -> str:
    """A metric in percent with two decimals, "n/a" when missing or not finite."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.2f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def ci(intervals: Mapping[str, Mapping[str, Any]] | None, name: str) -> str:
    """``"lower–upper"`` in percent, or "n/a"; a macro interval over fewer classes than
    its metric (too-rare ones left out) says so, with its own classes' point estimate."""
    if not intervals or not intervals.get(name):
        return "n/a"
    interval = intervals[name]
    text = f"{pct(interval['lower'])}–{pct(interval['upper'])}"
    if interval.get("too_rare"):
        text += (f" (over {interval['classes']} resamplable classes, whose mean is "
                 f"{pct(interval['point'])})")
    return text


def redraw_note(redrawn: Mapping[str, int], too_rare: Mapping[str, Mapping[str, str]]
                ) -> str:
    """One line: how many resamples were redrawn per level and which classes were too
    rare to resample (`bootstrap.bootstrap_resamples`)."""
    counts = ", ".join(f"{level} {n}" for level, n in redrawn.items())
    line = (f"Resamples lacking a positive or a negative of a resamplable class were "
            f"redrawn ({counts}), so every macro AUROC/AUPRC resample averages the same "
            "classes.")
    rare = {level: sorted(names) for level, names in too_rare.items() if names}
    if rare:
        line += (" Too rare to resample, left out of the macro AUROC/AUPRC intervals (each "
                 "given with the point estimate over its own classes): " + "; ".join(
                     f"{level}: {', '.join(names)}" for level, names in rare.items()) + ".")
    else:
        line += " No class was too rare to resample."
    return line


def bootstrap_note(detail: Mapping[str, Any]) -> str:
    """How the intervals of `detail["bootstrap"]` were made (or that there are none)."""
    boot = detail.get("bootstrap")
    if not boot:
        return "No bootstrap confidence intervals (--bootstrap=0)."
    unit = ("subjects (a cluster bootstrap: a subject's examples are resampled together)"
            if boot["unit"] == "subject" else "examples")
    note = (f"{round(100 * boot['level'])}% CI: percentile bootstrap, {boot['resamples']} "
            f"resamples of {unit}, seed {boot['seed']}; resamples in which a metric is "
            "undefined (a class without positives or negatives) are left out of its "
            "interval.")
    if "redrawn" in boot:  # evaluation.json files written before the redraw rule lack it
        note += "\n\n" + redraw_note(boot["redrawn"], boot.get("too_rare", {}))
    return note
