"""`benchmark_summary.json`: one bench run's cells as the store has them now (no torch).

The file belongs to one bench run: `check_out_dir` refuses a folder whose summary another grid wrote
(unless that summary is moved aside with `force_new`), and `write_summary` writes only this grid's rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vss_cli.errors import ConfigError, RunNotFound
from vss_cli.fileio import write_json
from vss_cli.report.schema import CellRow
from vss_cli.report.tables import baseline_point, cell_rows, summary_stats
from vss_cli.store import Run, Store

SUMMARY_NAME = "benchmark_summary.json"


@dataclass
class Summary:
    """What was written, and the rows it was written from."""

    path: Path
    content: dict[str, Any]
    rows: list[CellRow] = field(default_factory=list)


def summary_owner(out_dir: Path) -> str | None:
    """The bench run id recorded in the folder's summary file; '' when the file exists but names none."""
    path = Path(out_dir) / SUMMARY_NAME
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text()).get("bench_run") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def check_out_dir(store: Store, out_dir: Path, config_key: str, *, force_new: bool) -> None:
    """Refuse (exit 2, nothing written) a folder holding the summary of a grid with another configuration;
    with `force_new` the old summary is kept beside, renamed after its bench run."""
    owner = summary_owner(out_dir)
    if owner is None:
        return
    try:
        same = bool(owner) and store.get_run(owner).config_key == config_key
    except RunNotFound:
        same = False
    if same:
        return
    if not force_new:
        cont = (f"to continue that grid, run `vss bench --join {owner}` or `vss bench --skip-existing --out-dir "
                f"{out_dir}` with no grid options; " if owner else "")
        raise ConfigError(f"--out-dir {out_dir} holds the summary of another grid (bench run {owner or 'unknown'}) "
                          f"than these options give: {cont}to start this grid, pass another --out-dir, or --force-new")
    path = Path(out_dir) / SUMMARY_NAME
    path.rename(path.with_name(f"benchmark_summary.{owner or 'old'}.json"))


def write_summary(store: Store, bench: Run, out_dir: Path, skipped: Iterable[str], baseline_sha: str) -> Summary:
    """Every cell of this grid as the store has it now; written to a temporary name and renamed."""
    rows = cell_rows(store, bench.id, skipped=skipped, baseline_sha=baseline_sha)
    base = baseline_point(store, bench, rows)
    content = {
        "bench_run": bench.id,
        "baseline": {"run": base.run_id, "miou": base.miou, "latency_ms": base.latency_ms},
        "grid": bench.config["grid"],
        "settings": {k: v for k, v in bench.config.items() if k not in ("kind", "grid", "baseline")},
        "summary_stats": summary_stats(rows),
        "results": [r.to_dict() for r in rows],
        "updated_at": datetime.now(timezone.utc).isoformat(),
    }
    return Summary(path=write_json(Path(out_dir) / SUMMARY_NAME, content), content=content, rows=rows)
