"""Orchestration overhead of one `vss bench` cell: claim, heartbeat bookkeeping, step-run rows with their
`step-of` edges, artifacts, metrics, status changes and the summary rewrite, without the training and
evaluation work (the three steps are replaced by stand-ins that write what the real steps write).

    python benchmarks/bench_overhead.py [--cells 60] [--pg postgresql+psycopg://...]

Prints one row per back-end (SQLite in a temp dir; PostgreSQL when --pg or VSS_TEST_PG_URL is given).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vss_cli.report.summary import write_summary
from vss_cli.store import Store
from vss_cli.store.queue import Heartbeat
from vss_cli.workflows import bench_cells
from vss_cli.workflows.bench import bench_identity, ensure_cells
from vss_cli.workflows.bench_baseline import Baseline, BaselineSource
from vss_cli.workflows.bench_options import BenchOptions


@dataclass
class _Out:
    run_id: str


def _step(kind: str, n_metrics: int, n_files: int):
    def run(opts, store, **_):
        run = store.create_run(kind=kind, config={"kind": kind, "opts": repr(opts)[:500]}, status="running")
        out = Path(getattr(opts, "save", None) or getattr(opts, "out_dir", None) or tempfile.mkdtemp())
        out.mkdir(parents=True, exist_ok=True)
        store.update_run(run.id, out_dir=str(out))
        for i in range(n_files):
            path = out / f"{kind}{i}.bin"
            path.write_bytes(os.urandom(4096))
            store.add_artifact(run.id, kind="checkpoint" if i == 0 else "report", path=path)
        store.add_metrics(run.id, {f"{kind}_m{i}": float(i) for i in range(n_metrics)} |
                          {"candidate_miou": 0.5, "speedup_latency": 1.2})
        store.set_status(run.id, "completed")
        return _Out(run.id)

    return run


def _counting(store: Store) -> list[int]:
    """Count the store's transactions (reads and writes): the machine-independent part of the cost."""
    count, inner = [0], store._transaction

    def counted(fn, *, write):
        count[0] += 1
        return inner(fn, write=write)

    store._transaction = counted
    return count


def measure(url: str, cells: int, root: Path) -> tuple[float, float]:
    bench_cells.prune_run = _step("prune", 11, 2)
    bench_cells.eval_run = _step("eval", 45, 3)
    fresh = int.from_bytes(os.urandom(3), "big")  # a new grid each time, even on a database used before
    opts = BenchOptions(methods=[f"m{i}" for i in range(cells)], ratios=[0.3], seeds=[fresh],
                        finetune=BenchOptions().finetune.__class__(epochs=0), worker_grace=30.0)
    with Store(url) as store:
        base = Baseline(root / "base.pt", "0" * 64)
        settings = opts.settings("cpu")
        config, key = bench_identity(opts, BaselineSource(checkpoint=base), settings)
        bench, _ = store.create_run_once(kind="bench", config=config, config_key=key, status="running")
        rows = ensure_cells(store, bench, opts, base, settings)
        count = _counting(store)
        with Heartbeat(store, interval_s=5.0) as beat:
            work = bench_cells.CellWork(store=store, opts=opts, baseline=base, out_dir=root, beat=beat,
                                        bench_id=bench.id)
            t0 = time.perf_counter()
            bench_cells.work_through(work, rows, {}, on_done=lambda: write_summary(store, bench, root, [], base.sha256))
            write_summary(store, bench, root, [], base.sha256)  # the final one every grid writes
            return (time.perf_counter() - t0) / cells, count[0] / cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=60)
    parser.add_argument("--pg", default=os.environ.get("VSS_TEST_PG_URL"))
    args = parser.parse_args()
    os.environ.setdefault("VSS_QUIET", "1")
    print(f"{'back-end':<12} {'cells':>6} {'ms / cell':>10} {'transactions / cell':>20}")
    with tempfile.TemporaryDirectory() as tmp:
        backends = [("sqlite", str(Path(tmp) / "vss.db"))] + ([("postgresql", args.pg)] if args.pg else [])
        for name, url in backends:
            root = Path(tmp) / name
            root.mkdir()
            seconds, txns = measure(url, args.cells, root)
            print(f"{name:<12} {args.cells:>6} {seconds * 1e3:>10.1f} {txns:>20.1f}")


if __name__ == "__main__":
    main()
