"""The statistics of drift detection: what alerts, what does not, and the runs an alert points at."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from scipy.stats import fisher_exact

from agex.core.metrics import RunMetrics, Summary
from agex.engine import drift
from agex.engine.drift import Finding, Policy, Sample, compare, compare_samples

T = datetime(2026, 1, 5, tzinfo=UTC)
REFUND = "issue_refund.amount_usd"


def run(i: int, tag: str = "c", **kw: Any) -> RunMetrics:
    fields: dict[str, Any] = {"status": "succeeded", "steps": 4, "input_tokens": 9000, "output_tokens": 700,
                              "cost_usd": 0.0045, "active_s": 12.0,
                              "tool_calls": {"lookup_order": 1, "send_reply": 1}}
    fields.update(kw)
    return RunMetrics(run_id=f"{tag}{i}", tenant="acme", agent="support", agent_version="v1", principal="u",
                      created_at=T, ended_at=T, recorded_at=T, expire_at=T, **fields)


def support(rng: random.Random, i: int, tag: str, refund_scale: float = 1.0) -> RunMetrics:
    """A stable support agent's run: every metric varies, refunds of one run share its order's value."""
    steps = rng.choice((3, 4, 4, 5, 6))
    kb = rng.choice((0, 0, 1, 2))
    refunds = rng.choice((0, 0, 1, 1, 2))
    order = rng.uniform(15.0, 40.0)
    requested = int(refunds > 0 and rng.random() < 0.7)
    calls = {"lookup_order": 1, "search_kb": kb, "issue_refund": refunds, "send_reply": 1}
    return run(
        i, tag, status="succeeded" if rng.random() < 0.96 else "failed",
        error_code=None, steps=steps, input_tokens=int(rng.lognormvariate(9.0, 0.3)),
        output_tokens=int(rng.lognormvariate(6.0, 0.4)), cost_usd=rng.lognormvariate(-5.4, 0.35),
        active_s=rng.gammavariate(3.0, 4.0), tool_calls={k: v for k, v in calls.items() if v},
        tool_errors={"search_kb": 1} if kb and rng.random() < 0.05 else {},
        approvals_requested=requested, approvals_granted=requested - int(requested and rng.random() < 0.1),
        approvals_rejected=0, guard_verdicts={"pii:redact": 1} if rng.random() < 0.03 else {},
        watched={REFUND: [round(order * refund_scale, 2)] * refunds} if refunds else {},
        scores={"helpfulness": rng.betavariate(8.0, 2.0)} if rng.random() < 0.3 else {})


def by_metric(findings: list[Finding]) -> dict[str, Finding]:
    return {f.metric: f for f in findings}


# degenerate cases


def test_constant_and_equal_is_not_drift() -> None:
    same = [run(i, watched={REFUND: [24.0]}) for i in range(30)]
    found = by_metric(compare(same, same))
    assert set(found) == {"outcome", "tool_mix", "steps", "tokens", "cost_usd", "latency_s", "approval_rate",
                          "guardrail_rate", "tool_error_rate", f"watched.{REFUND}"}
    assert all(f.p_value == 1.0 and f.effect == 0.0 and not f.drifted for f in found.values())


def test_constant_but_different_values_drift_with_a_tiny_p() -> None:
    baseline = [run(i, "b", watched={REFUND: [24.0]}) for i in range(30)]
    current = [run(i, watched={REFUND: [48.0]}) for i in range(30)]
    f = by_metric(compare(baseline, current))[f"watched.{REFUND}"]
    assert f.drifted and f.test == "ks" and f.kind == "numeric"
    assert f.statistic == f.effect == 1.0
    assert f.p_value < 1e-15
    assert f.baseline == Summary(n=30, mean=24.0, median=24.0, p90=24.0)
    assert f.current.median == 48.0
    assert [r for r in by_metric(compare(baseline, current)).values() if r.drifted] == [f]


def test_degenerate_rates_and_categories() -> None:
    quiet = [run(i, "b") for i in range(40)]
    noisy = [run(i, status="failed", error_code="max_steps", guard_verdicts={"pii:redact": 1},
                 tool_errors={"lookup_order": 1}) for i in range(40)]
    same = by_metric(compare(quiet, quiet))
    assert same["guardrail_rate"].p_value == 1.0 and same["outcome"].p_value == 1.0
    moved = by_metric(compare(quiet, noisy))
    assert moved["guardrail_rate"].drifted and moved["guardrail_rate"].current.rate == 1.0
    assert moved["guardrail_rate"].effect == pytest.approx(np.pi)
    assert moved["tool_error_rate"].drifted and moved["tool_error_rate"].current.rate == 0.5
    outcome = moved["outcome"]
    assert outcome.drifted and outcome.effect == pytest.approx(1.0) and outcome.p_value < 1e-12
    assert outcome.current.counts == {"failed:max_steps": 40} and outcome.baseline.counts == {"succeeded": 40}
    for f in moved.values():
        assert all(np.isfinite([f.statistic, f.p_value, f.effect]))


def test_rare_categories_are_pooled_so_the_test_stays_valid() -> None:
    rng = random.Random(3)
    codes = ["max_steps", "tool_error", "model_error", "guard_block"]
    baseline = [run(i, "b", status="failed", error_code=rng.choice(codes)) if rng.random() < 0.04
                else run(i, "b") for i in range(1000)]
    current = [run(i) for i in range(29)] + [run(29, status="failed", error_code="guard_block")]
    f = by_metric(compare(baseline, current))["outcome"]
    assert f.test == "fisher"  # every failure category has an expected count below 1 in 30 runs
    assert not f.drifted and f.p_value > 0.5
    assert f.current.counts == {"succeeded": 29, "failed:guard_block": 1}


# gating


def test_min_runs_per_side() -> None:
    rng = random.Random(1)
    baseline = [support(rng, i, "b") for i in range(200)]
    assert compare(baseline, [support(rng, i, "c") for i in range(29)]) == []
    per_run = {f.metric for f in compare(baseline, [support(rng, i, "c") for i in range(30)])}
    assert {"outcome", "tool_mix", "steps", "tokens", "cost_usd", "latency_s", "approval_rate",
            "guardrail_rate", "tool_error_rate"} <= per_run
    assert "rejection_rate" in per_run  # approvals requested on both sides, none rejected in the window


def test_watched_values_are_gated_by_values_not_runs() -> None:
    baseline = [run(i, "b", watched={REFUND: [20.0 + i % 7, 21.0]}) for i in range(15)]  # 30 values
    ok = [run(i, watched={REFUND: [20.0 + i % 5, 22.0]}) for i in range(15)]
    found = compare_samples(Sample.of(baseline), Sample.of(ok), Policy())
    assert [f.metric for f in found] == [f"watched.{REFUND}"]
    short = [run(i, watched={REFUND: [20.0]}) for i in range(29)]
    assert not any(f.metric.startswith("watched.") for f in compare(baseline, short))
    nan = [run(i, watched={REFUND: [float("nan"), 20.0]}) for i in range(29)]
    assert not any(f.metric.startswith("watched.") for f in compare(baseline, nan))


def test_rates_without_a_denominator_are_not_tested() -> None:
    no_approvals = [run(i) for i in range(40)]
    found = by_metric(compare(no_approvals, no_approvals))
    assert "rejection_rate" not in found and "approval_rate" in found


# detection


def test_refunds_doubling_detected_with_30_runs_per_side() -> None:
    """One refund a run, of an order worth $15-40; then the new version refunds twice as much."""
    rng = random.Random(11)

    def with_refund(r: RunMetrics, scale: float) -> RunMetrics:
        return r.model_copy(update={"watched": {REFUND: [round(scale * rng.uniform(15.0, 40.0), 2)]}})

    baseline = [with_refund(support(rng, i, "b"), 1.0) for i in range(30)]
    current = [with_refund(support(rng, i, "c"), 2.0) for i in range(30)]
    found = by_metric(compare(baseline, current))
    f = found[f"watched.{REFUND}"]
    assert f.drifted and f.effect > 0.6
    assert f.p_value <= f.threshold <= Policy().level
    assert [m for m, x in found.items() if x.drifted] == [f"watched.{REFUND}"]
    assert len(f.examples) == 5 and all(r in {(x.tenant, x.run_id) for x in current} for r in f.examples)


def test_stable_traffic_raises_no_more_alarms_than_expected() -> None:
    """200 seeded windows of 60 runs, each against its own baseline of 300, checked once at alpha 0.1:
    at most 20 windows may alarm (5 do)."""
    policy = Policy(alpha=0.1, looks_per_window=1)
    rng = random.Random(2024)
    alarms = 0
    tested: dict[str, int] = {}
    for w in range(200):
        if w % 20 == 0:
            baseline = Sample.of([support(rng, i, "b") for i in range(300)])
        found = compare_samples(baseline, Sample.of([support(rng, i, f"w{w}-") for i in range(60)]), policy)
        alarms += any(f.drifted for f in found)
        for f in found:
            tested[f.metric] = tested.get(f.metric, 0) + 1
    assert alarms <= 20
    assert tested["steps"] == tested[f"watched.{REFUND}"] == 200
    assert "score.helpfulness" not in tested  # about 18 sampled runs of 60: fewer values than min_runs


def test_clustered_values_do_not_count_as_independent() -> None:
    """Each run repeats its value five times: 40 runs are worth about 40 values, not 200."""
    rng = np.random.default_rng(5)
    p = []
    for _ in range(60):
        sides = [np.repeat(rng.lognormal(3.0, 0.5, 40), 5) for _ in range(2)]
        b, c = (Sample.of([run(i, watched={REFUND: list(side[5 * i:5 * i + 5])}) for i in range(40)])
                for side in sides)
        p.append(by_metric(compare_samples(b, c, Policy()))[f"watched.{REFUND}"].p_value)
    assert sum(x < 0.05 for x in p) <= 6  # ks_2samp on the 200 values calls 53 of these 60 significant


# Holm


def result(metric: str, p: float, effect: float = 0.5) -> drift._Result:
    s = Summary(n=100)
    return drift._Result(metric, "numeric", "ks", effect, p, effect, s, s, lambda: (("acme", metric),))


def test_holm_steps_down_and_stops_at_the_first_failure() -> None:
    policy = Policy(alpha=0.01, looks_per_window=1)
    got = drift._holm([result("a", 0.004), result("b", 1e-6), result("c", 0.003)], policy)
    assert [f.drifted for f in got] == [True, True, True]  # Bonferroni (0.0033 each) would miss "a"
    assert [f.threshold for f in got] == pytest.approx([0.01, 0.01 / 3, 0.01 / 2])
    got = drift._holm([result("a", 0.001), result("b", 0.02), result("c", 0.0049)], policy)
    assert [f.drifted for f in got] == [True, False, True]
    got = drift._holm([result("a", 0.001), result("b", 0.006), result("c", 0.007)], policy)
    assert [f.drifted for f in got] == [True, False, False]
    # held to the step where Holm stopped, so that p <= threshold keeps meaning significant
    assert [f.threshold for f in got] == pytest.approx([0.01 / 3, 0.005, 0.005])
    assert all((f.p_value <= f.threshold) == f.drifted for f in got)


def test_holm_level_is_split_across_looks_and_the_effect_floor_applies_after() -> None:
    policy = Policy(alpha=0.01, looks_per_window=10)
    got = drift._holm([result("a", 0.0009, effect=0.05), result("b", 0.0004)], policy)
    assert [f.drifted for f in got] == [False, True]
    assert got[0].p_value <= got[0].threshold  # significant, below the effect floor: no alert
    assert got[0].examples == () and got[1].examples == (("acme", "b"),)


def test_policy_is_validated() -> None:
    for bad in ({"alpha": 0.0}, {"alpha": 1.0}, {"min_runs": 1}, {"looks_per_window": 0}, {"min_effect": -0.1}):
        with pytest.raises(ValueError):
            Policy(**bad)
    assert Policy().level == pytest.approx(0.01 / 24)


# examples


def test_examples_are_the_runs_beyond_the_baseline_p90() -> None:
    baseline = [run(i, "b", watched={REFUND: [20.0 + (i % 10)]}) for i in range(100)]
    current = [run(i, watched={REFUND: [20.0 + (i % 10)]}) for i in range(40)]
    current += [run(40 + i, watched={REFUND: [100.0 + i]}) for i in range(40)]
    f = by_metric(compare(baseline, current, Policy(looks_per_window=1)))[f"watched.{REFUND}"]
    assert f.drifted
    assert f.examples == tuple(("acme", f"c{i}") for i in (79, 78, 77, 76, 75))
    fell = by_metric(compare(current, baseline, Policy(looks_per_window=1)))[f"watched.{REFUND}"]
    assert fell.drifted and fell.examples == tuple(("acme", f"b{i}") for i in (0, 10, 20, 30, 40))


def test_examples_show_the_category_that_grew_and_the_rate_that_rose() -> None:
    baseline = [run(i, "b", approvals_requested=1, approvals_granted=1) for i in range(60)]
    current = [run(i, approvals_requested=1, approvals_granted=1) for i in range(30)]
    current += [run(30 + i, status="failed", error_code="max_steps", approvals_requested=2,
                    approvals_rejected=i % 3, approvals_granted=2 - i % 3,
                    tool_calls={"lookup_order": 1, "escalate": 1 + i % 4})
                for i in range(30)]
    found = by_metric(compare(baseline, current))
    assert found["outcome"].drifted
    assert found["outcome"].examples == tuple(("acme", f"c{i}") for i in range(30, 35))
    assert found["tool_mix"].drifted  # escalate grew most; runs with the most escalations first
    assert found["tool_mix"].examples == tuple(("acme", f"c{i}") for i in (33, 37, 41, 45, 49))
    rej = found["rejection_rate"]
    assert rej.drifted and rej.current.n == 90 and rej.baseline.rate == 0.0
    assert rej.examples == tuple(("acme", f"c{i}") for i in (32, 35, 38, 41, 44))


# equivalences


def test_fisher_matches_scipy() -> None:
    rng = random.Random(9)
    tables = [[[0, 0], [0, 0]], [[0, 30], [30, 0]], [[1000, 0], [0, 30]], [[80, 3920], [20, 780]]]
    tables += [[[rng.randint(0, n), rng.randint(0, n)], [rng.randint(0, n), rng.randint(0, n)]]
               for n in (3, 30, 300, 3000) for _ in range(50)]
    for t in tables:
        assert drift._fisher_exact(np.array(t)) == pytest.approx(fisher_exact(t).pvalue, rel=1e-9, abs=1e-300)


def test_a_prefix_of_a_sample_tests_as_the_prefix_of_the_runs() -> None:
    rng = random.Random(4)
    baseline = [support(rng, i, "b") for i in range(120)]
    window = [support(rng, i, "c", refund_scale=1.0 + i / 40) for i in range(90)]
    whole = Sample.of(window)
    for k in (30, 61, 90):
        assert compare_samples(Sample.of(baseline), whole.head(k)) == compare(baseline, window[:k])


def test_importing_the_module_loads_neither_numpy_nor_scipy() -> None:
    out = subprocess.run([sys.executable, "-c", "import sys, agex.engine.drift; "
                          "print(sorted(m for m in ('numpy', 'scipy') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
