"""Is an agent version still behaving as it did? Each behavioural metric of a window of runs is tested
against the same metric of a baseline, and alerts only if the change is both unlikely to be chance and
large enough to matter.

- Categorical (``outcome``, ``tool_mix``): chi-square test of homogeneity, categories with small expected
  counts pooled into one so the test is valid (Fisher's exact test of the largest category against the
  rest when pooling leaves one). Tool calls are counted per call but sampled per run, and calls of one
  run are not independent, so the statistic is divided by its design effect (Rao-Scott, first order).
  Effect: Cramér's V of the table with both sides given the same weight, so that it does not shrink as
  the baseline grows.
- Numeric (``steps``, ``tokens``, ``cost_usd``, ``latency_s``, ``watched.*``, ``score.*``): two-sample
  Kolmogorov-Smirnov. Effect: the KS distance D. Integer metrics have ties, which make it conservative.
  Watched values are pooled over runs; when a run gives several, the sample sizes are reduced to
  effective sizes by the intraclass correlation of the values' ranks within runs.
- Rates: Fisher's exact test (two-sided, as scipy computes it). Effect: Cohen's h,
  ``|2 asin sqrt(p1) - 2 asin sqrt(p2)|``, which weighs a change from 2% to 6% like one from 40% to 60%
  (an absolute difference would ignore the first). Rates pooled over runs (rejections over approvals,
  tool errors over calls) have their counts divided by the design effect before the test.

Every check controls the probability of any false alarm for the version and window at ``alpha``: Holm's
correction over the metrics tested, at ``alpha / looks_per_window`` because a window is tested again
each time it grows. ``bench/drift_false_alarms.py`` measures the false alarms and the detection power.

numpy and scipy are imported where they are used, not with the module: the Cloud Run functions that
import the engine but never test drift start faster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from agex.core.metrics import RunMetrics, Summary

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Floats = NDArray[np.float64]
    Ints = NDArray[np.int64]

Kind = Literal["categorical", "numeric", "rate"]

NUMERIC = ("steps", "tokens", "cost_usd", "latency_s")
RATES = ("approval_rate", "rejection_rate", "guardrail_rate", "tool_error_rate")
_POOLED_RATES = frozenset({"rejection_rate", "tool_error_rate"})
"""Counted over approvals or calls rather than runs: clustered by run."""
MIN_EXPECTED = 5.0
"""A chi-square cell's smallest expected count (Cochran's rule, the strict form)."""
EXAMPLES = 5


@dataclass(frozen=True)
class Policy:
    alpha: float = 0.01
    """Family-wise false-alarm probability per agent version and window, across all metrics and all the
    checks of the window."""
    min_runs: int = 30
    """Minimum sample per side: runs for outcome, tool mix, rates and per-run numerics; values for
    ``watched.*`` and ``score.*``. A metric with less on either side is not tested."""
    looks_per_window: int = 24
    """How often one window is checked as it fills (window / drift interval): alpha is split across
    them (Bonferroni), the metrics of one check share ``alpha / looks_per_window`` (Holm)."""
    min_effect: float = 0.10
    """Practical-significance floor, an alert needs ``effect >= min_effect``: Cramér's V (equal-weight
    sides) for categorical metrics, the KS distance D (the largest gap between the two cumulative
    distributions) for numeric ones, Cohen's h for rates."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        if self.min_runs < 2:
            raise ValueError("min_runs must be at least 2")
        if self.looks_per_window < 1:
            raise ValueError("looks_per_window must be at least 1")
        if not 0.0 <= self.min_effect <= 1.0:
            raise ValueError("min_effect must be in [0, 1]")

    @property
    def level(self) -> float:
        """The family-wise level of one check."""
        return self.alpha / self.looks_per_window


@dataclass(frozen=True)
class Finding:
    metric: str
    kind: Kind
    test: str
    """``chi2``, ``ks`` or ``fisher``."""
    statistic: float
    """Chi-square (after the design effect), KS D, or the odds ratio (current over baseline, 0.5 added
    to every cell when one is empty, so it is finite)."""
    p_value: float
    threshold: float
    """Holm's threshold for this metric; ``p_value <= threshold`` exactly when the change is significant."""
    effect: float
    baseline: Summary
    current: Summary
    examples: tuple[tuple[str, str], ...]
    """(tenant, run_id) of up to 5 current runs showing the change; empty unless ``drifted``."""
    drifted: bool


@dataclass(frozen=True, eq=False)
class _Counts:
    names: tuple[str, ...]
    per_run: Ints
    """runs x names."""


@dataclass(frozen=True, eq=False)
class _Side:
    values: Floats
    run: Ints
    summary: Summary
    design_effect: float


@dataclass(frozen=True, eq=False)
class Sample:
    """The metrics of a sequence of runs, column by column: what ``compare_samples`` tests. A window
    checked as it fills is read once and its prefixes taken with ``head``."""

    runs: tuple[tuple[str, str], ...]
    outcome: _Counts
    tools: _Counts
    numeric: Mapping[str, Floats]
    """Per run, NaN where not a finite number."""
    rates: Mapping[str, tuple[Ints, Ints]]
    """Per run: numerator, denominator."""
    values: Mapping[str, tuple[Floats, Ints]]
    """``watched.*`` and ``score.*``: the values and the index of the run each comes from, in run order."""
    _sides: dict[str, _Side] = field(default_factory=dict, init=False, repr=False)

    @property
    def n(self) -> int:
        return len(self.runs)

    def side(self, metric: str) -> _Side:
        """A numeric metric's finite values, their runs, summary and design effect: computed once per
        sample, as the baseline's are needed by every check of a window."""
        import numpy as np

        if metric not in self._sides:
            if metric in self.numeric:
                values, run = self.numeric[metric], np.arange(self.n, dtype=np.int64)
            else:
                values, run = self.values[metric]
            finite = np.isfinite(values)
            values, run = values[finite], run[finite]
            self._sides[metric] = _Side(values, run, _summary(values) if len(values) else Summary(n=0),
                                        _rank_design_effect(values, run))
        return self._sides[metric]

    @classmethod
    def of(cls, runs: Sequence[RunMetrics]) -> Sample:
        import numpy as np

        n = len(runs)

        def counts(rows: list[dict[str, int]]) -> _Counts:
            names = tuple(sorted({k for row in rows for k, v in row.items() if v > 0}))
            index = {k: j for j, k in enumerate(names)}
            m = np.zeros((n, len(names)), dtype=np.int64)
            for i, row in enumerate(rows):
                for k, v in row.items():
                    if v > 0:
                        m[i, index[k]] = v
            return _Counts(names, m)

        def num(xs: list[float]) -> Floats:
            a = np.array(xs, dtype=np.float64)
            a[~np.isfinite(a)] = np.nan
            return a

        def ints(xs: list[int]) -> Ints:
            return np.array(xs, dtype=np.int64).reshape(n)

        calls = [sum(r.tool_calls.values()) for r in runs]
        errors = [min(sum(r.tool_errors.values()), c) for r, c in zip(runs, calls, strict=True)]
        pooled: dict[str, tuple[list[float], list[int]]] = {}
        for i, r in enumerate(runs):
            for name, vals in r.watched.items():
                vs, ix = pooled.setdefault(f"watched.{name}", ([], []))
                for v in vals:
                    if math.isfinite(v):
                        vs.append(float(v))
                        ix.append(i)
            for name, score in r.scores.items():
                vs, ix = pooled.setdefault(f"score.{name}", ([], []))
                if math.isfinite(score):
                    vs.append(float(score))
                    ix.append(i)
        return cls(
            runs=tuple((r.tenant, r.run_id) for r in runs),
            outcome=counts([{_outcome(r): 1} for r in runs]),
            tools=counts([dict(r.tool_calls) for r in runs]),
            numeric={
                "steps": num([r.steps for r in runs]),
                "tokens": num([r.input_tokens + r.output_tokens for r in runs]),
                "cost_usd": num([r.cost_usd for r in runs]),
                "latency_s": num([r.active_s for r in runs]),
            },
            rates={
                "approval_rate": (ints([int(r.approvals_requested > 0) for r in runs]), ints([1] * n)),
                "rejection_rate": (ints([min(r.approvals_rejected, r.approvals_requested) for r in runs]),
                                   ints([r.approvals_requested for r in runs])),
                "guardrail_rate": (ints([int(any(v > 0 for v in r.guard_verdicts.values())) for r in runs]),
                                   ints([1] * n)),
                "tool_error_rate": (ints(errors), ints(calls)),
            },
            values={k: (np.array(vs, dtype=np.float64), np.array(ix, dtype=np.int64))
                    for k, (vs, ix) in pooled.items()},
        )

    def head(self, k: int) -> Sample:
        """The first ``k`` runs."""
        import numpy as np

        def cut(v: tuple[Floats, Ints]) -> tuple[Floats, Ints]:
            j = int(np.searchsorted(v[1], k, side="left"))
            return v[0][:j], v[1][:j]

        return Sample(
            runs=self.runs[:k],
            outcome=_Counts(self.outcome.names, self.outcome.per_run[:k]),
            tools=_Counts(self.tools.names, self.tools.per_run[:k]),
            numeric={m: a[:k] for m, a in self.numeric.items()},
            rates={m: (a[:k], b[:k]) for m, (a, b) in self.rates.items()},
            values={m: cut(v) for m, v in self.values.items()},
        )


def _outcome(run: RunMetrics) -> str:
    return f"{run.status}:{run.error_code}" if run.status == "failed" and run.error_code else run.status


@dataclass(frozen=True)
class _Result:
    metric: str
    kind: Kind
    test: str
    statistic: float
    p_value: float
    effect: float
    baseline: Summary
    current: Summary
    examples: Callable[[], tuple[tuple[str, str], ...]]


def compare(baseline: Sequence[RunMetrics], current: Sequence[RunMetrics],
            policy: Policy = Policy()) -> list[Finding]:
    """Every metric with enough data on both sides, tested; ``drifted`` after Holm's correction over the
    tested metrics at level alpha / looks_per_window, and the effect floor."""
    return compare_samples(Sample.of(baseline), Sample.of(current), policy)


def compare_samples(baseline: Sample, current: Sample,
                    policy: Policy = Policy()) -> list[Finding]:
    """``compare`` over samples already read (the baseline read once for all the checks of a window)."""
    results: list[_Result] = []
    if baseline.n >= policy.min_runs and current.n >= policy.min_runs:
        for metric, b, c, clustered in (("outcome", baseline.outcome, current.outcome, False),
                                        ("tool_mix", baseline.tools, current.tools, True)):
            r = _categorical(metric, b, c, current.runs, clustered)
            if r is not None:
                results.append(r)
        for metric in NUMERIC:
            r = _numeric(metric, baseline.side(metric), current.side(metric), current.runs, policy.min_runs)
            if r is not None:
                results.append(r)
        for metric in RATES:
            r = _rate(metric, baseline.rates[metric], current.rates[metric], current.runs)
            if r is not None:
                results.append(r)
    for metric in sorted(set(baseline.values) & set(current.values)):
        r = _numeric(metric, baseline.side(metric), current.side(metric), current.runs, policy.min_runs)
        if r is not None:
            results.append(r)
    return _holm(results, policy)


def _holm(results: list[_Result], policy: Policy) -> list[Finding]:
    m = len(results)
    thresholds = [0.0] * m
    significant = [False] * m
    failed_at: float | None = None
    for rank, i in enumerate(sorted(range(m), key=lambda j: results[j].p_value)):
        step = policy.level / (m - rank)
        if failed_at is None and results[i].p_value <= step:
            thresholds[i], significant[i] = step, True
        else:
            # Holm stops at the first p above its step; later metrics are held to that step, so that
            # p <= threshold stays equivalent to significance.
            failed_at = step if failed_at is None else failed_at
            thresholds[i] = failed_at
    findings = []
    for r, threshold, sig in zip(results, thresholds, significant, strict=True):
        drifted = sig and r.effect >= policy.min_effect
        findings.append(Finding(
            metric=r.metric, kind=r.kind, test=r.test, statistic=r.statistic, p_value=r.p_value,
            threshold=threshold, effect=r.effect, baseline=r.baseline, current=r.current,
            examples=r.examples() if drifted else (), drifted=drifted))
    return findings


def _p(x: float) -> float:
    return 1.0 if math.isnan(x) else min(1.0, max(0.0, x))


def _fisher_exact(table: Ints) -> float:
    """Two-sided p-value of Fisher's exact test of a 2x2 table, as ``scipy.stats.fisher_exact`` computes
    it (the tables of the observed margins no likelier than the observed one, with its relative
    tolerance of 1e-7), over the whole support at once: scipy evaluates the probabilities one by one,
    which made a check of a window several times slower."""
    import numpy as np
    from scipy.special import gammaln

    a, b, c, d = (int(x) for x in table.ravel())
    row, col, n = a + b, a + c, a + b + c + d
    x = np.arange(max(0, col - (n - row)), min(row, col) + 1)
    log_p = (gammaln(row + 1) + gammaln(n - row + 1) + gammaln(col + 1) + gammaln(n - col + 1) - gammaln(n + 1)
             - gammaln(x + 1) - gammaln(row - x + 1) - gammaln(col - x + 1) - gammaln(n - row - col + x + 1))
    observed = log_p[a - int(x[0])]
    return float(np.exp(log_p[log_p <= observed + math.log1p(1e-7)]).sum())


def _odds_ratio(table: Ints) -> float:
    a, b, c, d = (float(x) for x in table.ravel())
    if 0.0 in (a, b, c, d):
        a, b, c, d = a + 0.5, b + 0.5, c + 0.5, d + 0.5
    # rows are baseline, current; column 0 is the event: odds of the current over the baseline's
    return (c / d) / (a / b)


def _design_effect(b: Ints, c: Ints) -> float:
    """First-order Rao-Scott design effect of the difference of the two sides' category shares, for
    counts sampled by run (runs x categories): 1 when runs are as good as independent draws of their
    counts, more when a run's counts go together. Never below 1: a small sample's estimate can be low
    by chance, and a low one would make the test too eager."""
    import numpy as np

    v_cluster = np.zeros(b.shape[1])
    v_simple = np.zeros(b.shape[1])
    for y in (b, c):
        n, m = y.shape[0], y.sum(axis=1)
        total = float(m.sum())
        if n < 2 or total == 0:
            continue
        share = y.sum(axis=0) / total
        residual = y - np.outer(m, share)
        v_cluster += n / (n - 1) * (residual**2).sum(axis=0) / total**2
        v_simple += share * (1 - share) / total
    pooled = (b.sum(axis=0) + c.sum(axis=0)) / float(b.sum() + c.sum())
    d = np.divide(v_cluster, v_simple, out=np.ones_like(v_cluster), where=v_simple > 0)
    k = b.shape[1]
    if k < 2:
        return 1.0
    return max(1.0, float(((1 - pooled) * d).sum() / (k - 1)))


def _categorical(metric: str, b: _Counts, c: _Counts, runs: tuple[tuple[str, str], ...],
                 clustered: bool) -> _Result | None:
    import numpy as np
    from scipy.stats import chi2, chi2_contingency

    names = sorted(set(b.names) | set(c.names))

    def aligned(x: _Counts) -> Ints:
        out = np.zeros((x.per_run.shape[0], len(names)), dtype=np.int64)
        out[:, [names.index(k) for k in x.names]] = x.per_run
        return out

    bm, cm = aligned(b), aligned(c)
    tb, tc = bm.sum(axis=0), cm.sum(axis=0)
    nb, nc = int(tb.sum()), int(tc.sum())
    if nb == 0 or nc == 0:
        return None
    summaries = (Summary(n=nb, counts={k: int(v) for k, v in zip(names, tb, strict=True) if v}),
                 Summary(n=nc, counts={k: int(v) for k, v in zip(names, tc, strict=True) if v}))
    total = tb + tc
    order = sorted(range(len(names)), key=lambda j: (-int(total[j]), names[j]))

    def examples() -> tuple[tuple[str, str], ...]:
        grew = max(order, key=lambda j: tc[j] / nc - tb[j] / nb)
        hits = np.flatnonzero(cm[:, grew])
        hits = hits[np.argsort(-cm[hits, grew], kind="stable")]
        return tuple(runs[i] for i in hits[:EXAMPLES])

    if len(names) == 1:
        return _Result(metric, "categorical", "chi2", 0.0, 1.0, 0.0, *summaries, examples)

    def expected(count: int) -> float:
        return min(nb, nc) * count / (nb + nc)

    keep = [j for j in order if expected(int(total[j])) >= MIN_EXPECTED]
    rest = [j for j in order if expected(int(total[j])) < MIN_EXPECTED]
    while rest and keep and expected(int(total[rest].sum())) < MIN_EXPECTED:
        rest.append(keep.pop())
    groups = [[j] for j in keep] + ([rest] if rest else [])
    exact = len(groups) == 1
    if exact:
        groups = [order[:1], order[1:]]
    bp = np.stack([bm[:, g].sum(axis=1) for g in groups], axis=1)
    cp = np.stack([cm[:, g].sum(axis=1) for g in groups], axis=1)
    table = np.stack([bp.sum(axis=0), cp.sum(axis=0)])
    qb, qc = table[0] / nb, table[1] / nc
    effect = math.sqrt(float((((qb - qc) ** 2) / (2 * (qb + qc))).sum()))
    deff = _design_effect(bp, cp) if clustered else 1.0
    if exact:
        scaled = np.rint(table / deff).astype(np.int64)
        return _Result(metric, "categorical", "fisher", _odds_ratio(scaled), _p(_fisher_exact(scaled)), effect,
                       *summaries, examples)
    statistic, _, dof, _ = chi2_contingency(table, correction=False)
    statistic = float(statistic) / deff
    return _Result(metric, "categorical", "chi2", statistic, _p(float(chi2.sf(statistic, dof))), effect,
                   *summaries, examples)


def _rank_design_effect(values: Floats, run: Ints) -> float:
    """1 + (m - 1) * rho: how much a sample of values grouped by run is worth less than as many
    independent values, from the intraclass correlation rho (ANOVA estimator) of their ranks and the
    size-weighted mean number m of values per run."""
    import numpy as np
    from scipy.stats import rankdata

    _, group, sizes = np.unique(run, return_inverse=True, return_counts=True)
    n, k = len(values), len(sizes)
    if k == n or k < 2:
        return 1.0
    r = rankdata(values)
    means = np.bincount(group, weights=r) / sizes
    between = float((sizes * (means - r.mean()) ** 2).sum()) / (k - 1)
    within = float(((r - means[group]) ** 2).sum()) / (n - k)
    m0 = (n - float((sizes**2).sum()) / n) / (k - 1)
    denominator = between + (m0 - 1) * within
    if denominator <= 0:
        return 1.0
    rho = min(1.0, max(0.0, (between - within) / denominator))
    return 1.0 + (float((sizes**2).sum()) / n - 1.0) * rho


def _numeric(metric: str, bs: _Side, cs: _Side, runs: tuple[tuple[str, str], ...],
             min_n: int) -> _Result | None:
    import numpy as np
    from scipy.stats import ks_2samp, kstwo

    b, c = bs.values, cs.values
    if len(b) < min_n or len(c) < min_n:
        return None

    def examples() -> tuple[tuple[str, str], ...]:
        bmed, cmed = float(np.median(b)), float(np.median(c))
        up = cmed > bmed if cmed != bmed else float(c.mean()) >= float(b.mean())
        limit = float(np.percentile(b, 90 if up else 10))
        beyond = c > limit if up else c < limit
        pick = np.flatnonzero(beyond) if beyond.any() else np.arange(len(c))
        pick = pick[np.argsort(-c[pick] if up else c[pick], kind="stable")]
        seen: list[int] = []
        for i in cs.run[pick]:
            if int(i) not in seen:
                seen.append(int(i))
            if len(seen) == EXAMPLES:
                break
        return tuple(runs[i] for i in seen)

    constant = b.min() == b.max() and c.min() == c.max()
    if constant and b[0] == c[0]:
        return _Result(metric, "numeric", "ks", 0.0, 1.0, 0.0, bs.summary, cs.summary, examples)
    nb, nc = len(b) / bs.design_effect, len(c) / cs.design_effect
    if constant:
        # all of one side above all of the other: two of the C(nb + nc, nb) orderings are as extreme
        d = 1.0
        p = math.exp(math.log(2) - math.lgamma(nb + nc + 1) + math.lgamma(nb + 1) + math.lgamma(nc + 1))
    else:
        res = ks_2samp(b, c)
        d, p = float(res.statistic), float(res.pvalue)
        if bs.design_effect > 1.0 or cs.design_effect > 1.0:
            p = float(kstwo.sf(d, max(1, round(nb * nc / (nb + nc)))))
    return _Result(metric, "numeric", "ks", d, _p(p), d, bs.summary, cs.summary, examples)


def _summary(x: Floats) -> Summary:
    import numpy as np

    return Summary(n=len(x), mean=float(x.mean()), median=float(np.median(x)), p90=float(np.percentile(x, 90)))


def _rate(metric: str, b: tuple[Ints, Ints], c: tuple[Ints, Ints],
          runs: tuple[tuple[str, str], ...]) -> _Result | None:
    import numpy as np

    (bn, bd), (cn, cd) = b, c
    yb, mb, yc, mc = int(bn.sum()), int(bd.sum()), int(cn.sum()), int(cd.sum())
    if mb == 0 or mc == 0:
        return None
    pb, pc = yb / mb, yc / mc
    summaries = Summary(n=mb, rate=pb), Summary(n=mc, rate=pc)
    effect = abs(2 * math.asin(math.sqrt(pc)) - 2 * math.asin(math.sqrt(pb)))

    def examples() -> tuple[tuple[str, str], ...]:
        if pc >= pb:
            hits = np.flatnonzero(cn > 0)
            hits = hits[np.argsort(-cn[hits], kind="stable")]
        else:
            hits = np.flatnonzero((cd > 0) & (cn == 0))
        return tuple(runs[i] for i in hits[:EXAMPLES])

    table = np.array([[yb, mb - yb], [yc, mc - yc]], dtype=np.int64)
    if metric in _POOLED_RATES:
        deff = _design_effect(np.stack([bn, bd - bn], axis=1), np.stack([cn, cd - cn], axis=1))
        table = np.rint(table / deff).astype(np.int64)
    return _Result(metric, "rate", "fisher", _odds_ratio(table), _p(_fisher_exact(table)), effect, *summaries,
                   examples)
