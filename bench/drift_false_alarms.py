"""How often drift detection alarms on stable traffic, and how soon it sees a real change.

    .venv/bin/python -m bench.drift_false_alarms [--windows 300] [--power-windows 30] [--seed 7] [--out PATH]

A simulated support agent (``Traffic``) runs with stable behaviour. Each of ``--windows`` windows of 200
runs is checked against a baseline of 1,000 runs at ``looks_per_window`` (24) growing prefixes, as the
drift function re-checks a window while it fills; a window with an alert at any look is a false alarm.
A fresh baseline is drawn every 20 windows, so the rate is averaged over baselines rather than
conditional on one. The per-metric p-values and effects of every look are kept, so the same windows also
give the rate under other policies (no correction for the looks, no effect floor, alpha 0.05), and the
final looks are tested once more without the design effects, to show what they correct.

Then, for each change (``SCENARIOS``) and window size (30, 60, 200, 1,000 runs), ``--power-windows``
windows of changed traffic: the share in which the changed metric alerts at some look (a window stops
at its first alert), and the runs seen by then. Everything is seeded.

The defaults take about 100 s on one core. The committed result (and the figures of
docs/observability.md) come from ``--windows 2000 --power-windows 100``: about 12 minutes.

Writes ``bench/results/drift_false_alarms.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agex.core.metrics import RunMetrics  # noqa: E402
from agex.engine import drift  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "drift_false_alarms.json"
BASELINE_RUNS = 1000
WINDOW_RUNS = 200
WINDOWS_PER_BASELINE = 20
POWER_SIZES = (30, 60, 200, 1000)
REFUND = "issue_refund.amount_usd"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Traffic:
    """A customer-support agent: looks the order up, searches the knowledge base, refunds (refunds over
    $25 wait for a human's approval), replies; sometimes escalates. Refunds of one run share the order's
    value, a run's reviewer is more or less strict, and some runs meet a flaky backend: the runs' values
    are clustered the way real ones are."""

    kb_weights: tuple[float, float, float] = (0.45, 0.35, 0.20)
    """P(0, 1, 2 knowledge-base searches)."""
    refund_weights: tuple[float, float, float] = (0.55, 0.33, 0.12)
    refund_scale: float = 1.0
    strictness: tuple[float, float] = (1.5, 11.0)
    """Beta parameters of a run's reviewer's chance to reject a refund (mean 0.12)."""
    error_scale: float = 1.0
    """Multiplies the per-call error chance (0.6% normally, 15% in the 8% of runs on a flaky backend)."""
    fail: float = 0.03

    def run(self, rng: random.Random, tenant: str, run_id: str) -> RunMetrics:
        lookup = int(rng.random() < 0.92)
        kb = rng.choices((0, 1, 2), self.kb_weights)[0]
        planned = rng.choices((0, 1, 2), self.refund_weights)[0] if lookup else 0
        escalate = int(rng.random() < 0.06)
        order = rng.lognormvariate(math.log(45.0), 0.6)
        strict = rng.betavariate(*self.strictness)
        requested = rejected = refunds = 0
        amounts: list[float] = []
        for _ in range(planned):
            share = 1.0 if rng.random() < 0.4 else rng.uniform(0.15, 0.8)
            amount = round(order * share * self.refund_scale, 2)
            if amount > 25.0:
                requested += 1
                if rng.random() < strict:
                    rejected += 1
                    continue
            refunds += 1
            amounts.append(amount)
        flaky = rng.random() < 0.08
        p_error = min(1.0, (0.15 if flaky else 0.006) * self.error_scale)
        calls: dict[str, int] = {}
        errors: dict[str, int] = {}
        planned_calls = {"lookup_order": lookup, "search_kb": kb, "issue_refund": refunds, "escalate": escalate,
                         "send_reply": 1}
        for tool, n in planned_calls.items():
            for _ in range(n):
                for _attempt in range(3):  # a failed call is retried twice, and fails alike on a flaky backend
                    calls[tool] = calls.get(tool, 0) + 1
                    if rng.random() >= p_error:
                        break
                    errors[tool] = errors.get(tool, 0) + 1
        n_calls = sum(calls.values())
        steps = 1 + n_calls - (1 if kb == 2 else 0)  # two searches issued in one turn
        u = rng.random()
        if u < self.fail:
            status, code = "failed", rng.choices(("max_steps", "tool_error", "model_error"), (4, 4, 2))[0]
        elif u < self.fail + 0.01:
            status, code = "cancelled", None
        elif u < self.fail + 0.015:
            status, code = "expired", None
        else:
            status, code = "succeeded", None
        input_tokens = int(rng.lognormvariate(math.log(2200.0 * steps), 0.3))
        output_tokens = int(rng.lognormvariate(math.log(180.0 * steps), 0.4))
        active = sum(rng.gammavariate(2.0, 0.9) for _ in range(steps)) + 0.4 * n_calls
        waited = 60.0 * requested * rng.expovariate(1.0)
        guards: dict[str, int] = {}
        if rng.random() < 0.04:
            guards["pii:redact"] = 1
        if rng.random() < 0.005:
            guards["injection:block"] = 1
        scores = {"helpfulness": rng.betavariate(9.0, 2.0)} if rng.random() < 0.25 else {}
        end = T0 + timedelta(seconds=active + waited)
        return RunMetrics(
            run_id=run_id, tenant=tenant, agent="support", agent_version="v1", principal="user:ops",
            status=status, error_code=code, steps=steps, input_tokens=input_tokens, output_tokens=output_tokens,
            cost_usd=input_tokens * 0.30e-6 + output_tokens * 2.50e-6, model_calls=steps,
            latency_s=active + waited, active_s=active, tool_calls=calls, tool_errors=errors,
            approvals_requested=requested, approvals_granted=requested - rejected, approvals_rejected=rejected,
            guard_verdicts=guards, watched={REFUND: amounts} if amounts else {}, scores=scores,
            created_at=T0, ended_at=end, recorded_at=end, expire_at=end + timedelta(days=400))

    def sample(self, seed: int, n: int) -> drift.Sample:
        rng = random.Random(seed)
        return drift.Sample.of([self.run(rng, f"t{i % 3}", f"{seed:x}-{i}") for i in range(n)])


STABLE = Traffic()
SCENARIOS: dict[str, tuple[str, str, Traffic]] = {
    "refunds_double": (f"watched.{REFUND}", "refund amounts x2 (more of them wait for approval)",
                       replace(STABLE, refund_scale=2.0)),
    "tool_mix_shift": ("tool_mix", "knowledge-base searches per run 0.75 -> 1.5 on average",
                       replace(STABLE, kb_weights=(0.10, 0.30, 0.60))),
    "rejections_double": ("rejection_rate", "reviewers' chance to reject a refund 12% -> 24% on average",
                          replace(STABLE, strictness=(3.0, 9.5))),
    "tool_errors_triple": ("tool_error_rate", "per-call error chance x3 (retries included)",
                           replace(STABLE, error_scale=3.0)),
    "failures_triple": ("outcome", "failed runs 3% -> 9%", replace(STABLE, fail=0.09)),
}


def looks(size: int, per_window: int) -> list[int]:
    """The prefix sizes a window of ``size`` runs is checked at."""
    return sorted({math.ceil(size * j / per_window) for j in range(1, per_window + 1)})


def drifted(tests: list[tuple[str, float, float]], level: float, min_effect: float) -> set[str]:
    """Holm at ``level`` over (metric, p, effect), then the effect floor: as ``drift.compare`` decides."""
    out: set[str] = set()
    ordered = sorted(tests, key=lambda t: t[1])
    for rank, (metric, p, effect) in enumerate(ordered):
        if p > level / (len(ordered) - rank):
            break
        if effect >= min_effect:
            out.add(metric)
    return out


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1 - conf) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


@contextlib.contextmanager
def without_design_effects() -> Iterator[None]:
    """The tests as if every call, approval and watched value were an independent draw."""
    saved = drift._design_effect, drift._rank_design_effect
    drift._design_effect = lambda b, c: 1.0  # type: ignore[assignment]
    drift._rank_design_effect = lambda v, r: 1.0  # type: ignore[assignment]
    try:
        yield
    finally:
        drift._design_effect, drift._rank_design_effect = saved


def stable(windows: int, policy: drift.Policy, seed: int) -> dict[str, Any]:
    at = [k for k in looks(WINDOW_RUNS, policy.looks_per_window) if k >= policy.min_runs]
    variants = {
        "policy": (policy.level, policy.min_effect),
        "no_effect_floor": (policy.level, 0.0),
        "no_correction_for_looks": (policy.alpha, policy.min_effect),
        "no_correction_for_looks_no_floor": (policy.alpha, 0.0),
        "alpha_0.05": (0.05 / policy.looks_per_window, policy.min_effect),
    }
    alarms = dict.fromkeys(variants, 0)
    by_metric: dict[str, int] = {}
    final_p: dict[str, list[float]] = {}
    raw_final_p: dict[str, list[float]] = {}
    tests_run = 0
    baseline = STABLE.sample(seed, BASELINE_RUNS)
    for w in range(windows):
        if w and w % WINDOWS_PER_BASELINE == 0:
            baseline = STABLE.sample(seed + w, BASELINE_RUNS)
        window = STABLE.sample(seed * 1_000_003 + w, WINDOW_RUNS)
        hits: dict[str, set[str]] = {v: set() for v in variants}
        for k in at:
            findings = drift.compare_samples(baseline, window.head(k), policy)
            tests_run += len(findings)
            tests = [(f.metric, f.p_value, f.effect) for f in findings]
            got = {f.metric for f in findings if f.drifted}
            assert got == drifted(tests, policy.level, policy.min_effect)
            for v, (level, floor) in variants.items():
                hits[v] |= drifted(tests, level, floor)
        for f in findings:
            final_p.setdefault(f.metric, []).append(f.p_value)
        with without_design_effects():
            for f in drift.compare_samples(baseline.head(BASELINE_RUNS), window.head(WINDOW_RUNS), policy):
                raw_final_p.setdefault(f.metric, []).append(f.p_value)
        for v in variants:
            alarms[v] += bool(hits[v])
        for m in hits["policy"]:
            by_metric[m] = by_metric.get(m, 0) + 1

    def calibration(ps: dict[str, list[float]]) -> dict[str, dict[str, float]]:
        return {m: {"tests": len(p), "p<0.05": sum(x < 0.05 for x in p) / len(p),
                    "p<0.01": sum(x < 0.01 for x in p) / len(p)} for m, p in sorted(ps.items())}

    lo, hi = clopper_pearson(alarms["policy"], windows)
    return {
        "windows": windows, "window_runs": WINDOW_RUNS, "baseline_runs": BASELINE_RUNS,
        "baselines": math.ceil(windows / WINDOWS_PER_BASELINE), "looks_tested": at, "tests": tests_run,
        "false_alarms": alarms["policy"], "false_alarm_rate": alarms["policy"] / windows,
        "false_alarm_rate_95ci": [lo, hi], "alarms_by_metric": by_metric,
        "variants": {v: {"level_per_look": level, "min_effect": floor, "false_alarms": alarms[v],
                         "false_alarm_rate": alarms[v] / windows}
                     for v, (level, floor) in variants.items()},
        "final_look_calibration": calibration(final_p),
        "final_look_calibration_without_design_effects": calibration(raw_final_p),
    }


def power(windows: int, policy: drift.Policy, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s_i, (name, (target, what, traffic)) in enumerate(SCENARIOS.items()):
        rows: dict[str, Any] = {}
        for size in POWER_SIZES:
            at = [k for k in looks(size, policy.looks_per_window) if k >= policy.min_runs]
            detected, any_alert, first = 0, 0, []
            collateral: dict[str, int] = {}
            baseline = STABLE.sample(seed + 7919 * s_i, BASELINE_RUNS)
            for w in range(windows):
                if w and w % WINDOWS_PER_BASELINE == 0:
                    baseline = STABLE.sample(seed + 7919 * s_i + w, BASELINE_RUNS)
                window = traffic.sample(seed * 999_983 + 100_000 * s_i + 1000 * size + w, size)
                alerted = False
                for k in at:
                    found = drift.compare_samples(baseline, window.head(k), policy)
                    hit = {f.metric for f in found if f.drifted}
                    if hit and not alerted:
                        alerted = True
                        any_alert += 1
                        for m in hit:
                            collateral[m] = collateral.get(m, 0) + 1
                    if target in hit:
                        detected += 1
                        first.append(k)
                        break
            first.sort()
            rows[str(size)] = {"windows": windows, "looks_tested": len(at), "detected": detected / windows,
                               "any_alert": any_alert / windows,
                               "median_runs_to_detect": first[len(first) // 2] if first else None,
                               "metrics_at_first_alert": dict(sorted(collateral.items()))}
        big = {f.metric: f for f in drift.compare_samples(STABLE.sample(seed + 1, 5000),
                                                          traffic.sample(seed + 2, 5000), policy)}[target]
        out[name] = {"metric": target, "change": what, "baseline": big.baseline.model_dump(exclude_none=True),
                     "changed": big.current.model_dump(exclude_none=True), "effect": big.effect,
                     "by_window_runs": rows}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=300, help="stable windows of 200 runs")
    ap.add_argument("--power-windows", type=int, default=30, help="changed windows per change and size")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    policy = drift.Policy()
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "policy": asdict(policy),
        "seed": args.seed, "argv": sys.argv[1:],
    }
    result["stable"] = stable(args.windows, policy, args.seed)
    t1 = time.perf_counter()
    result["power"] = power(args.power_windows, policy, args.seed)
    result["seconds"] = {"stable": round(t1 - t0, 1), "power": round(time.perf_counter() - t1, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    report(result, args.out)


def report(r: dict[str, Any], out: Path) -> None:
    s = r["stable"]
    lo, hi = s["false_alarm_rate_95ci"]
    print(f"stable traffic: {s['windows']} windows of {s['window_runs']} runs, {s['baselines']} baselines of "
          f"{s['baseline_runs']} runs, {len(s['looks_tested'])} looks tested per window, {s['tests']:,} tests")
    print(f"  false alarms: {s['false_alarms']}/{s['windows']} = {s['false_alarm_rate']:.4f} "
          f"(95% CI {lo:.4f}-{hi:.4f}; alpha {r['policy']['alpha']})  by metric: {s['alarms_by_metric']}")
    for v, row in s["variants"].items():
        print(f"  {v:34} level/look {row['level_per_look']:.2e}  floor {row['min_effect']:.2f}  "
              f"-> {row['false_alarm_rate']:.4f}")
    print("  final look, share of p < 0.01 per metric (with / without design effects):")
    raw = s["final_look_calibration_without_design_effects"]
    for m, row in s["final_look_calibration"].items():
        print(f"    {m:34} {row['p<0.01']:.4f} / {raw.get(m, {}).get('p<0.01', float('nan')):.4f}")
    print("\ndetection (share of windows where the changed metric alerts; median runs seen by then):")
    print(f"  {'change':20} {'metric':34} " + " ".join(f"{n:>14}" for n in POWER_SIZES))
    for name, row in r["power"].items():
        cells = []
        for n in POWER_SIZES:
            c = row["by_window_runs"][str(n)]
            cells.append(f"{c['detected']:>6.2f} ({c['median_runs_to_detect'] or '-':>4})")
        print(f"  {name:20} {row['metric']:34} " + " ".join(f"{c:>14}" for c in cells))
        print(f"  {'':20} {_side(row['baseline'])} -> {_side(row['changed'])}, effect {row['effect']:.3f}")
    print(f"\n{r['seconds']}  -> {out}")


def _side(summary: dict[str, Any]) -> str:
    if "rate" in summary:
        return f"rate {summary['rate']:.3f}"
    if "mean" in summary:
        return f"mean {summary['mean']:.3g} median {summary['median']:.3g}"
    counts, n = summary.get("counts", {}), summary["n"]
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
    return "{" + ", ".join(f"{k} {v / n:.2f}" for k, v in top) + "}"


if __name__ == "__main__":
    main()
