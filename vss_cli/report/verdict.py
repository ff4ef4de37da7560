"""A verdict against `random` (issue 12): does a criterion keep more accuracy than random channels?

Cells are grouped by method and ratio (plus any other `by` keys, e.g. the allocation); each group
gets the mean and sample standard deviation of the metric over its seeds, and `vs_random`:
`better` / `worse` when a one-sided Welch t-test (unequal variances) of the method's values against
`random`'s in the same ratio (and other `by` keys) gives p < alpha, `indistinguishable` otherwise,
and None when either side has fewer than two seeds (or the method is random itself). Two groups
without spread are compared exactly: equal constants are indistinguishable, different constants
differ with p = 0. Torch-free (scipy only).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

RANDOM = "random"
ALPHA = 0.05


@dataclass
class VerdictRow:
    """One method × ratio (× other keys) cell group with its verdict against random."""

    key: dict
    method: str
    ratio: float
    n: int
    mean: float
    std: float
    vs_random: str | None
    p_better: float | None = None  # one-sided p of "method > random"
    p_worse: float | None = None  # one-sided p of "method < random"

    @property
    def mean_std(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f}" if self.n > 1 else f"{self.mean:.4f}"


def welch_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Welch's t statistic of mean(a) − mean(b) and its Welch–Satterthwaite degrees of freedom."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, df


def welch_p(a: Sequence[float], b: Sequence[float], alternative: str) -> float:
    """One-sided Welch t-test p-value of mean(a) > mean(b) ('greater') or < ('less'); two or more each.

    Same as scipy's `ttest_ind(a, b, equal_var=False, alternative=...)`, computed from exact sample
    variances (so a seed-independent criterion, whose values are all equal, needs no special case
    unless both sides are constant: then the means are compared exactly, p = 0 or 1)."""
    from scipy.stats import t as student

    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        diff = statistics.fmean(a) - statistics.fmean(b)
        return 0.0 if (diff > 0 if alternative == "greater" else diff < 0) else 1.0
    stat, df = welch_t(a, b)
    return float(student.sf(stat, df) if alternative == "greater" else student.cdf(stat, df))


def judge(values: Sequence[float], random: Sequence[float] | None, alpha: float = ALPHA) -> tuple:
    """(verdict, p_better, p_worse); verdict None without two values on both sides."""
    if random is None or len(values) < 2 or len(random) < 2:
        return None, None, None
    better, worse = welch_p(values, random, "greater"), welch_p(values, random, "less")
    verdict = "better" if better < alpha else "worse" if worse < alpha else "indistinguishable"
    return verdict, better, worse


def verdict_rows(cells: Iterable[Mapping], metric: str = "miou", by: Sequence[str] = ("method", "ratio"),
                 alpha: float = ALPHA) -> list[VerdictRow]:
    """Rows (in first-seen order) for cells carrying `method`, `ratio`, the metric and the `by` keys.

    Cells whose metric is missing or not a number are left out.
    """
    keys = tuple(dict.fromkeys(("method", "ratio", *by)))
    groups: dict[tuple, list[float]] = {}
    for cell in cells:
        value = cell.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        groups.setdefault(tuple(cell.get(k) for k in keys), []).append(float(value))
    rows = []
    for group, values in groups.items():
        key = dict(zip(keys, group, strict=True))
        random = None if key["method"] == RANDOM else groups.get(tuple(RANDOM if k == "method" else key[k] for k in keys))
        verdict, better, worse = judge(values, random, alpha)
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        rows.append(VerdictRow(key, key["method"], float(key["ratio"]), len(values), statistics.fmean(values), std,
                               verdict, better, worse))
    return rows


def verdict_footer(metric: str = "miou", alpha: float = ALPHA, by: Sequence[str] = ("method", "ratio")) -> str:
    """The sentence a report prints under a table with a `vs_random` column."""
    same = ", ".join(k for k in dict.fromkeys(("ratio", *by)) if k != "method")
    return (f"vs_random: one-sided Welch t-test (unequal variances) of {metric} over seeds against `random` at the "
            f"same {same}; better/worse at p < {alpha:g}, otherwise indistinguishable; blank with fewer than two "
            f"seeds on either side. Values are mean ± sample std over seeds.")
