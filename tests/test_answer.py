"""The closing answer of a grid (report.answer): who kept more mIoU at each cost, by how much, and
whether that is beyond noise; with too few seeds, that the grid cannot tell."""

from __future__ import annotations

import pytest

from vss_cli.report.answer import answer, more_seeds_grid, two_sided_p
from vss_cli.report.schema import CellRow


def _rows(method: str, ratio: float, mious, macs: float | None = None) -> list[CellRow]:
    return [CellRow(method, ratio, seed, "completed",
                    metrics={"miou": m, "macs_reduction": ratio if macs is None else macs})
            for seed, m in enumerate(mious)]


def test_one_seed_names_the_leader_and_says_the_grid_cannot_tell():
    found = answer(_rows("fpgm", 0.2, [0.81]) + _rows("sirfp", 0.2, [0.79]) + _rows("fpgm", 0.5, [0.60])
                   + _rows("sirfp", 0.5, [0.66]), finetune_epochs=5)
    text = "\n".join(found.lines)
    assert not found.decided
    assert "after 5 fine-tuning epochs" in found.lines[0]
    assert "at 20% of MACs removed: fpgm 0.8100, sirfp 0.7900" in text
    assert "fpgm keeps +0.0200 mIoU over sirfp" in text and "sirfp keeps +0.0600 mIoU over fpgm" in text
    assert text.count("cannot tell whether that is beyond noise") == 2
    assert text.count("No random reference in the grid") == 1
    assert "fpgm at 1 of 2 ratios (0.2); sirfp at 1 of 2 ratios (0.5)" in text


def test_seeds_judge_the_difference_with_welch():
    clear = answer(_rows("l1", 0.5, [0.60, 0.61, 0.62]) + _rows("l2", 0.5, [0.50, 0.51, 0.52]))
    assert "beyond seed noise (Welch p = 0.000, 3 vs 3 seeds)" in "\n".join(clear.lines)
    close = answer(_rows("l1", 0.5, [0.60, 0.50, 0.55]) + _rows("l2", 0.5, [0.56, 0.52, 0.54]))
    assert "within seed noise" in "\n".join(close.lines)
    # the two-sided p is twice the smaller one-sided Welch p (scipy's ttest_ind(equal_var=False))
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.60, 0.50, 0.55], [0.56, 0.52, 0.54]
    assert two_sided_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_random_in_the_grid_gives_each_method_a_verdict_and_decides():
    rows = (_rows("l1", 0.5, [0.52, 0.55, 0.51]) + _rows("random", 0.5, [0.40, 0.47, 0.43])
            + _rows("fpgm", 0.5, [0.41, 0.46, 0.44]))
    found = answer(rows)
    text = "\n".join(found.lines)
    assert found.decided
    assert "against random (0.4333): l1 +0.0933, better (p = 0.012)" in text  # fair-comparison.md's example
    assert "fpgm +0.0033, indistinguishable" in text


def test_a_channel_budget_says_the_costs_differ():
    found = answer(_rows("l1", 0.3, [0.7], macs=0.45) + _rows("taylor", 0.3, [0.8], macs=0.09), budget="channels")
    assert "at 30% of channels removed (MACs removed 9.0%-45.0%, so the costs differ)" in "\n".join(found.lines)


def test_the_grid_that_would_tell_adds_random_and_seeds():
    assert more_seeds_grid(["fpgm", "sirfp"], [0]) == (["fpgm", "sirfp", "random"], [0, 1, 2])
    assert more_seeds_grid(["l1", "random"], [3, 7]) == (["l1", "random"], [3, 7, 0])
