"""The closing lines of `vss bench` (and `vss report`): which method kept more mIoU at each cost.

A grid is run to answer one question, so it ends with the answer in words: at each ratio (a cost: with
the bench's default `--budget macs`, the same share of MACs removed for every method), which method
kept more mIoU, by how much, and whether that difference is beyond noise:

* between two methods, a two-sided Welch t-test over their seeds (`report.verdict`), p < 0.05;
* against `random` in the grid, the one-sided verdict of `report.verdict` (better / worse /
  indistinguishable), the baseline a criterion has to beat (docs/fair-comparison.md).

With fewer than two seeds on a side there is no spread to test against, and the answer says the grid
cannot tell; `Answer.decided` is then False and the caller prints the command that would tell
(`more_seeds_grid`). Torch-free.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from vss_cli.report.schema import CellRow
from vss_cli.report.verdict import ALPHA, RANDOM, judge, welch_p

VERDICT_SEEDS = 3  # seeds the suggested grid runs: the fewest that give a Welch test some power (df ~ 4)


@dataclass
class MethodAt:
    """One method's completed cells at one ratio."""

    method: str
    values: list[float]
    macs_reduction: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)


@dataclass
class Answer:
    """The closing lines and whether every comparison in them has a noise verdict."""

    lines: list[str] = field(default_factory=list)
    decided: bool = True


def two_sided_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's two-sided p of mean(a) != mean(b); None with fewer than two values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    return min(1.0, 2 * min(welch_p(a, b, "greater"), welch_p(a, b, "less")))


def cost_label(ratio: float, budget: str, cells: Sequence[MethodAt]) -> str:
    """`20% of MACs removed` (the achieved range when it differs), or what the ratio counted."""
    achieved = [v for m in cells for v in m.macs_reduction]
    if budget == "macs":
        label = f"{ratio:.0%} of MACs removed"
        if achieved and (min(achieved) < ratio - 0.005 or max(achieved) > ratio + 0.005):
            label += f" (achieved {min(achieved):.1%}-{max(achieved):.1%})"
        return label
    what = {"channels": "channels", "latency": "latency"}.get(budget, budget)
    label = f"{ratio:.0%} of {what} removed"
    if achieved:  # then the methods' costs differ: say by how much
        label += f" (MACs removed {min(achieved):.1%}-{max(achieved):.1%}, so the costs differ)"
    return label


def _by_ratio(rows: Sequence[CellRow]) -> dict[float, list[MethodAt]]:
    out: dict[float, dict[str, MethodAt]] = {}
    for row in rows:
        miou = row.metric("miou")
        if row.status != "completed" or miou is None:
            continue
        at = out.setdefault(row.ratio, {}).setdefault(row.method, MethodAt(row.method, [], []))
        at.values.append(miou)
        if row.metric("macs_reduction") is not None:
            at.macs_reduction.append(row.metric("macs_reduction"))
    return {ratio: list(methods.values()) for ratio, methods in sorted(out.items())}


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _pair_line(best: MethodAt, other: MethodAt) -> tuple[str, bool]:
    """`fpgm +0.0173 over sirfp, beyond seed noise (...)`, and whether noise was judged."""
    diff = best.mean - other.mean
    head = (f"{best.method} keeps {diff:+.4f} mIoU over {other.method}" if diff > 0 else
            f"{best.method} and {other.method} kept the same mIoU")
    p = two_sided_p(best.values, other.values)
    if p is None:
        return (f"{head}; with {_seeds(min(best.n, other.n))} there is no spread to judge it against: "
                "the grid cannot tell whether that is beyond noise"), False
    if p < ALPHA:
        return f"{head}, beyond seed noise (Welch p = {p:.3f}, {best.n} vs {other.n} seeds)", True
    return f"{head}, within seed noise (Welch p = {p:.2f}, {best.n} vs {other.n} seeds): no real difference shown", True


def _random_line(methods: Sequence[MethodAt], random: MethodAt) -> tuple[str, bool]:
    parts, decided = [], True
    for m in methods:
        verdict, better, worse = judge(m.values, random.values)
        if verdict is None:
            parts.append(f"{m.method} {m.mean - random.mean:+.4f} (too few seeds to judge)")
            decided = False
        elif verdict == "indistinguishable":
            parts.append(f"{m.method} {m.mean - random.mean:+.4f}, indistinguishable (p = {better:.2f})")
        else:
            parts.append(f"{m.method} {m.mean - random.mean:+.4f}, {verdict} "
                         f"(p = {better if verdict == 'better' else worse:.3f})")
    return f"against random ({random.mean:.4f}): " + "; ".join(parts), decided


def answer(rows: Sequence[CellRow], *, budget: str = "macs", finetune_epochs: int | None = None) -> Answer:
    """The closing lines for a grid's cell rows (see the module docstring)."""
    by_ratio = _by_ratio(rows)
    out = Answer()
    trained = (f"after {finetune_epochs} fine-tuning epoch{'s' if finetune_epochs != 1 else ''}"
               if finetune_epochs else "without fine-tuning" if finetune_epochs == 0 else "")
    out.lines.append(f"Answer: which method kept more mIoU at each cost (candidate mIoU {trained}, mean over "
                     "seeds)".replace("mIoU  (", "mIoU ("))
    if not by_ratio:
        out.lines.append("  no completed cell: nothing to compare")
        out.decided = False
        return out
    wins: dict[str, list[str]] = {}
    shown_beyond = judged = 0
    for ratio, cells in by_ratio.items():
        random = next((m for m in cells if m.method == RANDOM), None)
        methods = sorted((m for m in cells if m.method != RANDOM), key=lambda m: -m.mean)
        if not methods:
            methods, random = [random], None
        ranking = ", ".join(f"{m.method} {m.mean:.4f}" for m in methods)
        out.lines.append(f"  at {cost_label(ratio, budget, cells)}: {ranking}")
        best = methods[0]
        if len(methods) > 1 and best.mean > methods[1].mean:
            wins.setdefault(best.method, []).append(f"{ratio:g}")
        for other in methods[1:]:
            text, decided = _pair_line(best, other)
            out.lines.append(f"    {text}")
            out.decided &= decided
            judged += decided
            shown_beyond += decided and "beyond" in text
        if methods[0].method != RANDOM and random is not None:
            text, decided = _random_line(methods, random)
            out.lines.append(f"    {text}")
            out.decided &= decided
    compared = sum(len([m for m in cells if m.method != RANDOM]) > 1 for cells in by_ratio.values())
    if compared:
        tally = "; ".join(f"{m} at {len(r)} of {compared} ratio{'s' if compared != 1 else ''} ({', '.join(r)})"
                          for m, r in sorted(wins.items(), key=lambda kv: -len(kv[1]))) or "no method (ties)"
        noise = (f"{shown_beyond} of {judged} judged difference{'s' if judged != 1 else ''} beyond seed noise"
                 if judged else "no difference could be judged against noise")
        out.lines.append(f"Overall: more mIoU kept by {tally}; {noise}.")
    if not any(m.method == RANDOM for cells in by_ratio.values() for m in cells):
        out.lines.append("No random reference in the grid: nothing shows the criteria beat random channels.")
        out.decided = False
    return out


def more_seeds_grid(methods: Sequence[str], seeds: Sequence[int]) -> tuple[list[str], list[int]]:
    """The methods (with `random`) and seeds (at least VERDICT_SEEDS) of a grid that can tell."""
    wanted = list(methods) + ([RANDOM] if RANDOM not in methods else [])
    more = list(seeds)
    candidate = 0
    while len(more) < VERDICT_SEEDS:
        if candidate not in more:
            more.append(candidate)
        candidate += 1
    return wanted, more
