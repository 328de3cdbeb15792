"""What both sides of the benchmark share: the payload, the fake model's script, and the summaries."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

STEPS = 500
"""Tool-calling steps of the long run; the model answers at step ``STEPS + 1``."""
PAD = "x" * 1000
"""The 1000-character ``pad`` argument every tick call carries (and the tool echoes back): the same
message sizes on both systems."""
FIRST = range(1, 11)
"""Steps 1-10."""


def last_range(steps: int) -> range:
    """Steps ``steps - 9`` to ``steps`` (491-500 for 500 steps)."""
    return range(steps - 9, steps + 1)


def tick_args(n: int) -> dict[str, Any]:
    return {"n": n, "pad": PAD}


def final_text(steps: int) -> str:
    return f"ticked {steps} times"


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def window_means(per_step: list[dict[str, Any]], keys: Sequence[str], steps: int,
                 baseline: range = FIRST) -> dict[str, Any]:
    """Means of ``keys`` over ``baseline`` (steps 1-10 unless told) and over the last 10 tool steps, and
    the last/first ratios."""
    by_step = {row["step"]: row for row in per_step}
    first = [by_step[s] for s in baseline if s in by_step]
    last = [by_step[s] for s in last_range(steps) if s in by_step]
    out: dict[str, Any] = {"first_steps": [baseline.start, baseline.stop - 1], "last_steps": [steps - 9, steps],
                           "first": {}, "last": {}, "ratio": {}, "first_median": {}, "last_median": {},
                           "ratio_median": {}}
    for k in keys:
        f = mean([r[k] for r in first])
        lst = mean([r[k] for r in last])
        out["first"][k] = f
        out["last"][k] = lst
        out["ratio"][k] = (lst / f) if f else None
        fm = statistics.median([r[k] for r in first]) if first else 0.0
        lm = statistics.median([r[k] for r in last]) if last else 0.0
        out["first_median"][k] = fm
        out["last_median"][k] = lm
        out["ratio_median"][k] = (lm / fm) if fm else None
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return (a / b) if a is not None and b else None


def trend(per_step: list[dict[str, Any]], key: str, bucket: int = 50) -> dict[str, Any]:
    """Medians of ``key`` per ``bucket`` steps, and the least-squares slope over all steps (per 100 steps):
    sturdier than two 10-step windows when the machine is shared and timings are noisy."""
    rows = sorted(per_step, key=lambda r: r["step"])
    buckets = [{"steps": [chunk[0]["step"], chunk[-1]["step"]], "median": statistics.median(r[key] for r in chunk)}
               for chunk in (rows[i:i + bucket] for i in range(0, len(rows), bucket)) if chunk]
    slope = None
    if len(rows) > 1:
        xs = [float(r["step"]) for r in rows]
        ys = [float(r[key]) for r in rows]
        slope = statistics.linear_regression(xs, ys).slope * 100
    return {"key": key, "bucket_medians": buckets, "slope_per_100_steps": slope,
            "overall_median": statistics.median(r[key] for r in rows) if rows else None}
