"""The verdict against random: mean ± std per method × ratio and a one-sided Welch t-test (issue 12)."""

from __future__ import annotations

import math
import subprocess
import sys
from random import Random

import pytest

from vss_cli.report.verdict import judge, verdict_footer, verdict_rows, welch_p, welch_t

# a = [0.52, 0.55, 0.51], b = [0.40, 0.47, 0.43]: means 0.5267 / 0.4333, variances 4.333e-4 / 1.233e-3;
# t = 0.09333 / sqrt(4.333e-4/3 + 1.233e-3/3) = 3.9598, Welch-Satterthwaite df = 3.2510,
# one-sided p = P(T_3.251 > 3.9598) = 0.012389
A = [0.52, 0.55, 0.51]
B = [0.40, 0.47, 0.43]


def cells(method: str, ratio: float, values, **extra):
    return [{"method": method, "ratio": ratio, "seed": s, "miou": v, **extra} for s, v in enumerate(values)]


def test_welch_p_matches_the_hand_computed_value():
    t, df = welch_t(A, B)
    assert t == pytest.approx(3.9598, abs=1e-4) and df == pytest.approx(3.2510, abs=1e-4)
    assert welch_p(A, B, "greater") == pytest.approx(0.012389, abs=2e-6)
    assert welch_p(A, B, "less") == pytest.approx(1 - 0.012389, abs=2e-6)
    assert welch_p(B, A, "less") == pytest.approx(0.012389, abs=2e-6)


def test_welch_p_equals_scipys_ttest_ind():
    from scipy.stats import ttest_ind

    g = Random(0)
    for _ in range(20):
        a = [g.gauss(0.5, 0.05) for _ in range(g.randint(2, 5))]
        b = [g.gauss(0.48, 0.08) for _ in range(g.randint(2, 5))]
        for alt in ("greater", "less"):
            assert welch_p(a, b, alt) == pytest.approx(ttest_ind(a, b, equal_var=False, alternative=alt).pvalue,
                                                       rel=1e-9)
    assert welch_p([0.3, 0.3, 0.3], B, "greater") == 1 - welch_p([0.3, 0.3, 0.3], B, "less")


def test_verdicts_better_worse_indistinguishable():
    rows = verdict_rows(cells("random", 0.5, B) + cells("l1", 0.5, A) + cells("taylor", 0.5, [0.30, 0.32, 0.31])
                        + cells("fpgm", 0.5, [0.41, 0.46, 0.44]))
    by = {r.method: r for r in rows}
    assert by["l1"].vs_random == "better" and by["l1"].p_better == pytest.approx(0.012389, abs=2e-6)
    assert by["taylor"].vs_random == "worse"
    assert by["fpgm"].vs_random == "indistinguishable"
    assert by["random"].vs_random is None
    assert by["l1"].mean == pytest.approx(sum(A) / 3) and by["l1"].std == pytest.approx(math.sqrt(4.3333e-4), rel=1e-3)
    assert by["l1"].n == 3 and by["l1"].mean_std == "0.5267 ± 0.0208"


def test_no_verdict_without_two_seeds_or_a_random_cell_at_that_ratio():
    rows = verdict_rows(cells("random", 0.5, B) + cells("l1", 0.5, [0.6]) + cells("l2", 0.3, A))
    by = {r.method: r for r in rows}
    assert by["l1"].vs_random is None and math.isnan(by["l1"].std)  # one seed
    assert by["l2"].vs_random is None  # no random at 0.3
    assert judge(A, [0.4]) == (None, None, None)


def test_the_comparison_is_within_the_other_keys():
    rows = verdict_rows(cells("random", 0.5, B, allocation="uniform") + cells("random", 0.5, A, allocation="global")
                        + cells("l1", 0.5, A, allocation="uniform") + cells("l1", 0.5, A, allocation="global"),
                        by=("allocation", "method", "ratio"))
    got = {(r.key["allocation"], r.method): r.vs_random for r in rows}
    assert got[("uniform", "l1")] == "better" and got[("global", "l1")] == "indistinguishable"
    assert "same ratio, allocation" in verdict_footer(by=("allocation", "method", "ratio"))


def test_constant_groups_are_compared_exactly_and_missing_values_skipped():
    rows = verdict_rows(cells("random", 0.5, [0.2, 0.2]) + cells("l1", 0.5, [0.3, 0.3]) + cells("l2", 0.5, [0.2, 0.2])
                        + [{"method": "l1", "ratio": 0.5, "seed": 9, "miou": None}])
    by = {r.method: r for r in rows}
    assert by["l1"].vs_random == "better" and by["l1"].n == 2
    assert by["l2"].vs_random == "indistinguishable"


def test_footer_states_the_test():
    text = verdict_footer()
    assert "one-sided Welch t-test" in text and "p < 0.05" in text and "random" in text


def test_verdict_imports_no_torch():
    code = "import sys, vss_cli.report.verdict as v; v.welch_p([1,2],[0,1],'greater'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _cell(method: str, ratio: float, seed: int, miou: float, **extra):
    from vss_cli.report.schema import CellRow

    return CellRow(method=method, ratio=ratio, seed=seed, status="completed", metrics={"miou": miou, **extra})


def test_report_aggregate_carries_vs_random_and_the_slower_flag():
    from vss_cli.report.tables import aggregate, aggregate_columns, display_rows, verdict_note

    rows = [_cell("random", 0.5, s, m) for s, m in enumerate((0.10, 0.12, 0.11))]
    rows += [_cell("taylor", 0.5, s, m) for s, m in enumerate((0.60, 0.62, 0.58))]
    rows += [_cell("l1", 0.5, s, m, slower_than_parent=float(s == 0)) for s, m in enumerate((0.05, 0.2, 0.12))]
    table = aggregate(rows)
    by = {r["method"]: r for r in table}
    assert "vs_random" in aggregate_columns() and set(aggregate_columns()) == set(table[0])
    assert by["taylor"]["vs_random"] == "better"
    assert by["l1"]["vs_random"] == "indistinguishable"
    assert by["random"]["vs_random"] is None
    assert by["l1"]["slower_than_parent"] == 1
    shown = {r["method"]: r for r in display_rows(table)}
    assert shown["taylor"]["vs random"] == "better" and shown["l1"]["timing"] == "slower than parent"
    assert "Welch" in verdict_note(table)


def test_no_verdict_column_without_random():
    from vss_cli.report.tables import aggregate, display_rows, verdict_note

    table = aggregate([_cell("l1", 0.3, s, 0.5) for s in range(2)])
    assert table[0]["vs_random"] is None and verdict_note(table) is None
    assert "vs random" not in display_rows(table)[0]
