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


def ci(intervals: Mapping[str, Mapping[str, float]] | None, name: str) -> str:
    """``"lower–upper"`` in percent, or "n/a" without an interval."""
    if not intervals or name not in intervals:
        return "n/a"
    return f"{pct(intervals[name]['lower'])}–{pct(intervals[name]['upper'])}"


def bootstrap_note(detail: Mapping[str, Any]) -> str:
    """How the intervals of `detail["bootstrap"]` were made (or that there are none)."""
    boot = detail.get("bootstrap")
    if not boot:
        return "No bootstrap confidence intervals (--bootstrap=0)."
    unit = ("subjects (a cluster bootstrap: a subject's examples are resampled together)"
            if boot["unit"] == "subject" else "examples")
    return (f"{round(100 * boot['level'])}% CI: percentile bootstrap, {boot['resamples']} "
            f"resamples of {unit}, seed {boot['seed']}; resamples in which a metric is "
            "undefined (a class without positives or negatives) are left out of its "
            "interval.")
