"""Every screen keeps its numbers (issue 25): the bench's final table and closing answer, `vss report`,
`runs list`, `runs show`, the eval table and the prune lines, each rendered on an 80-column terminal
and off a terminal (a log file), must show the key values whole: ids, methods, ratios, mIoU,
retention, speedup. On the terminal no line is wider than 80 columns; off it nothing is cut.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from screens import as_terminal, plain, widest
from typer.testing import CliRunner

from vss_cli.cli.app import app
from vss_cli.data import get_spec
from vss_cli.engine.checkpoint import ModelSpec, save_checkpoint
from vss_cli.models import build_model
from vss_cli.report.schema import EvalReport

runner = CliRunner()
MODES = ("terminal80", "log")
SMALL = ["--input-size", "32,48", "--batch-size", "16", "--samples", "8", "--speed-iters", "2", "--warmup", "1"]


def _screen(monkeypatch: pytest.MonkeyPatch, mode: str, *args: str) -> str:
    if mode == "terminal80":
        as_terminal(monkeypatch, 80)
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    out = plain(result.output)
    if mode == "terminal80":  # table lines fit; a long path or command is one soft-wrapped line (copyable)
        table_lines = [line for line in out.splitlines() if "  " in line.strip() or re.search("[│─━┃]", line)]
        assert widest("\n".join(table_lines)) <= 80, out
    else:
        assert "…" not in out, out
    return out


def _whole(value: str, out: str) -> bool:
    """`value` appears as a token of its own (not cut with … or split across lines)."""
    return re.search(rf"(?<![\w.…]){re.escape(value)}(?![\w…])", out) is not None


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A one-method grid (l1 at 0.3, one seed, no fine-tuning) on a tiny U-Net: its folder, database,
    bench command and output (off a terminal)."""
    root = tmp_path_factory.mktemp("screens")
    spec, kwargs = get_spec("synthetic"), {"width": 0.125}
    torch.manual_seed(0)
    model = build_model("unet", spec.num_classes, **kwargs).eval()
    base = save_checkpoint(root / "base.pt", model=model, spec=ModelSpec("unet", spec.num_classes, kwargs),
                           dataset=spec.to_dict())
    command = ["bench", "--baseline", str(base), "--methods", "l1", "--ratios", "0.3", "--seeds", "0",
               "--finetune-epochs", "0", *SMALL]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("VSS_DB", str(root / "vss.db"))
        mp.setenv("VSS_QUIET", "1")
        result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    summary = json.loads(next(root.rglob("benchmark_summary.json")).read_text())
    return {"root": root, "base": base, "command": command, "out": plain(result.output), "summary": summary}


@pytest.fixture
def in_grid(grid, monkeypatch):
    monkeypatch.chdir(grid["root"])
    monkeypatch.setenv("VSS_DB", str(grid["root"] / "vss.db"))
    return grid


def _key_values(row: dict) -> list[str]:
    return [row["method"], f"{row['ratio']:g}", f"{row['miou']:.4f}", f"{row['miou_retention']:.3f}",
            f"{row['speedup_latency']:.2f}"]


@pytest.mark.parametrize("mode", MODES)
def test_bench_final_table_keeps_the_key_values_whole(in_grid, monkeypatch, mode):
    out = _screen(monkeypatch, mode, *in_grid["command"])  # the same command again: the grid is done, reused
    (row,) = in_grid["summary"]["results"]
    assert all(_whole(v, out) for v in _key_values(row)), out
    assert _whole(in_grid["summary"]["bench_run"], out)
    assert "Answer:" in out and "at 30% of MACs removed: l1 " in out


def test_bench_ends_with_an_answer_and_the_command_that_would_tell(in_grid, monkeypatch):
    out = in_grid["out"]
    lines = out.splitlines()
    answer = lines.index(next(line for line in lines if line.startswith("Answer:")))
    assert "No random reference in the grid" in out and "To tell, run the grid with random and 3 seeds" in out
    assert "reuses the 1 cells done, runs 5 more" in out
    suggested = next(line.strip() for line in lines[answer:] if line.strip().startswith("vss bench"))
    assert "--methods l1,random" in suggested and "--seeds 0,1,2" in suggested and "--skip-existing" in suggested
    result = runner.invoke(app, shlex.split(suggested)[1:])  # the command as printed, without `vss`
    assert result.exit_code == 0, result.output
    told = plain(result.output)
    assert "6/6 cells completed (1 reused)" in told
    assert re.search(r"against random \(0\.\d{4}\): l1 [+-]0\.\d{4}, (better|worse|indistinguishable) \(p = ", told), told
    assert "To tell" not in told


@pytest.mark.parametrize("mode", MODES)
def test_report_keeps_the_key_values_whole(in_grid, monkeypatch, mode):
    out = _screen(monkeypatch, mode, "report", in_grid["summary"]["bench_run"])
    (row,) = in_grid["summary"]["results"]
    assert all(_whole(v, out) for v in _key_values(row)), out
    assert "latency ms" not in out and "Answer:" in out


@pytest.mark.parametrize("mode", MODES)
def test_runs_list_names_each_steps_method_and_ratio_and_how_many_are_shown(in_grid, monkeypatch, mode):
    out = _screen(monkeypatch, mode, "runs", "list", "--limit", "3")
    assert re.search(r"runs \(3 of \d+, newest first", out), out
    full = _screen(monkeypatch, mode, "runs", "list", "--limit", "100")
    for kind in ("prune", "eval"):
        row = next(line for line in full.splitlines() if f" {kind} " in line)
        assert re.search(r"\b(l1|random) r0\.3 macs\b", row), row


@pytest.mark.parametrize("mode", MODES)
def test_runs_show_keeps_the_out_dir(in_grid, monkeypatch, mode):
    prune_id = in_grid["summary"]["results"][0]["prune_run"]
    out = _screen(monkeypatch, mode, "runs", "show", prune_id)
    out_dir = next(p for p in (in_grid["root"] / "runs").rglob(prune_id) if p.is_dir())
    squeezed = re.sub(r"[\s│┃|]", "", out)  # a folded path continues on the next line of its cell
    assert str(out_dir.resolve()) in (out if mode == "log" else squeezed)
    assert _whole(prune_id, out)


@pytest.mark.parametrize("mode", MODES)
def test_eval_table_keeps_its_values_and_noisy_flag(in_grid, monkeypatch, mode):
    row = in_grid["summary"]["results"][0]
    out = _screen(monkeypatch, mode, "eval", "--baseline", str(in_grid["base"]), "--candidate", row["prune_run"],
                  *SMALL[:4], "--speed-iters", "2", "--warmup", "1")
    report = json.loads(next(Path(line.split("-> ")[1]) for line in out.splitlines() if line.startswith("report ->"))
                        .read_text())
    for value in (report["baseline_results"]["mIoU"], report["candidate_results"]["mIoU"]):
        assert _whole(f"{value:.4f}", out), out
    assert _whole(f"{report['speedup_latency']:.3f}", out)
    assert ("noisy" in out) == EvalReport.from_json(report).speed_noisy, out  # the flag the JSON carries


@pytest.mark.parametrize("mode", MODES)
def test_prune_lines_keep_paths_whole_and_name_the_rounding(in_grid, monkeypatch, mode):
    out = _screen(monkeypatch, mode, "prune", "--ckpt", str(in_grid["base"]), "--method", "l1", "--global-ratio",
                  "0.3", "--input-size", "32,48", "--samples", "0", "--speed-check-iters", "0", "--save", "p")
    line = next(line for line in out.splitlines() if line.startswith("prune run "))
    checkpoint = line.rsplit("-> ", 1)[1].strip()
    assert Path(checkpoint).is_file(), line  # the whole path on the line itself
    removed = float(re.search(r"removed (\d+\.\d)% of channels", line).group(1)) / 100
    assert removed < 0.295 and "--round-to 8 rounds kept widths up" in out, out  # 25.5% on this U-Net
    exact = _screen(monkeypatch, mode, "prune", "--ckpt", str(in_grid["base"]), "--method", "l1", "--global-ratio",
                    "0.3", "--input-size", "32,48", "--samples", "0", "--speed-check-iters", "0", "--save", "p",
                    "--round-to", "1")
    assert "removed 30.0% of channels" in exact and "--round-to" not in exact, exact  # the note's claim holds


@pytest.mark.parametrize("command", [["bench"], ["prune"], ["eval"], ["train"]])
def test_help_at_80_columns_has_whole_option_names_and_groups(monkeypatch, command):
    out = _screen(monkeypatch, "terminal80", *command, "--help")
    assert "…" not in out
    names = re.findall(r"(--[a-z][a-z-]+)", out)
    assert "--reconstruction-batches" in names or command != ["bench"]
    if command == ["bench"]:
        for panel in ("Grid", "Model", "Data", "Pruning", "Fine-tuning", "Evaluation", "Speed", "Cluster"):
            assert f"─ {panel} " in out, panel
        budget = re.search(r"│ --budget .*?(?=│ --)", out, re.S).group(0)  # its row, up to the next option
        assert "--global-ratio" not in budget and "--ratios" in budget
