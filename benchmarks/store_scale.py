"""The lineage store at research scale: build a database of N runs and time what users do with it.

    python benchmarks/store_scale.py                       # SQLite, 10 000 runs
    python benchmarks/store_scale.py --pg postgresql+psycopg://user@host/db   # and PostgreSQL too
    python benchmarks/store_scale.py --runs 2000 --cells 200  # a quick look
    python benchmarks/store_scale.py --before /tmp/old-checkout   # and that tree's CLI, timed alternately

The database holds one grid (`--cells` cells, each a cell + prune + finetune + eval run, under one
bench and one baseline) and train -> prune -> finetune -> eval chains for the rest of the runs, ~20
metrics per run, plus one 12-deep prune/finetune chain for `runs show`. Configs and versions are the
size the workflows record (the default option dataclasses: ~0.4 KB a step, ~1.2 KB a cell). CLI timings are wall-clock
seconds of a fresh `python -m vss_cli` process (best of --repeat), so they include start-up; the
`import floor` column is a Python that only imports the libraries such a process needs, timed
alternately with it (on a shared machine both drift together).
Issue 13's targets: list json <= 1 s, default list <= 0.5 s, report <= 2 s, --help <= 0.5 s,
create a run with 20 metrics <= 5 ms. Issue 24's (the store on SQLModel, which the floor now imports): the
default list within 0.25 s of the import floor, the 10 000-run JSON listing within 0.6 s of it (the
`over floor` column).
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from vss_cli.store import Store
from vss_cli.workflows.options import EvalOptions, PruneOptions, TrainOptions, to_plain

METRIC_KEYS = [f"m{i:02d}" for i in range(18)]
ROOT = Path(__file__).resolve().parents[1]
# Configs and versions as the workflows record them (~0.4 KB a step, ~1.2 KB a cell), so decoding
# and shipping them costs what it costs on a real database.
OPTIONS = {"prune": to_plain(PruneOptions()), "train": to_plain(TrainOptions()), "eval": to_plain(EvalOptions())}
OPTIONS["finetune"] = OPTIONS["train"]
OPTIONS["cell"] = {"prune": OPTIONS["prune"], "finetune": OPTIONS["train"], "eval": OPTIONS["eval"]}
VERSIONS = {"vss": "0.1.0", "torch": "2.14.1", "python": "3.11.7", "device": "cpu (x86_64)"}


def metrics(i: int) -> dict[str, float]:
    return {"miou": (i % 97) / 100, "val_miou": (i % 89) / 100, **{k: i * 0.001 + j for j, k in enumerate(METRIC_KEYS)}}


class Builder:
    """Creates runs through the public Store API and records how long each create_run took."""

    def __init__(self, store: Store) -> None:
        self.store, self.times, self.count = store, [], 0

    def run(self, kind: str, config: dict, parents=(), name: str | None = None) -> str:
        start = time.perf_counter()
        run = self.store.create_run(kind=kind, config={**OPTIONS.get(kind, {}), **config}, parents=list(parents),
                                    status="completed", name=name, metrics=metrics(self.count), versions=VERSIONS)
        self.times.append(time.perf_counter() - start)
        self.count += 1
        return run.id


def build_grid(b: Builder, cells: int) -> str:
    """A bench over cells = methods x ratios x seeds, each cell with its three steps."""
    side = max(1, round(cells ** (1 / 3)))
    methods = [f"method{i}" for i in range(side)]
    ratios = [round(0.05 * (i + 1), 2) for i in range(side)]
    seeds = list(range(max(1, -(-cells // (side * side)))))
    sha = "a" * 64
    baseline = b.run("train", {"model": "unet", "dataset": "synthetic", "epochs": 50}, name="baseline")
    bench = b.run("bench", {"kind": "bench", "baseline": {"checkpoint_sha256": sha},
                            "grid": {"methods": methods, "ratios": ratios, "seeds": seeds}}, [(baseline, "baseline-of")])
    for method, ratio, seed in itertools.islice(itertools.product(methods, ratios, seeds), cells):
        axes = {"method": method, "ratio": ratio, "seed": seed}
        cell = b.run("cell", {**axes, "baseline_sha256": sha}, [(bench, "cell-of")], name=f"{method} r{ratio} s{seed}")
        prune = b.run("prune", {**axes, "model": "unet"}, [(baseline, "pruned-from"), (cell, "step-of")])
        tune = b.run("finetune", {"epochs": 50, "seed": seed}, [(prune, "finetuned-from"), (cell, "step-of")])
        b.run("eval", {"batch_size": 1}, [(tune, "evaluates"), (baseline, "baseline-of"), (cell, "step-of")])
    return bench


def build_chains(b: Builder, runs: int) -> str:
    """train -> prune -> finetune -> eval chains until `runs` runs exist; returns the deep chain's tip."""
    tip = b.run("train", {"model": "deeplabv3", "dataset": "cityscapes"}, name="deep chain")
    for depth in range(12):
        tip = b.run("prune" if depth % 2 == 0 else "finetune", {"depth": depth}, [(tip, "pruned-from")])
    i = 0
    while b.count < runs:
        train = b.run("train", {"model": "unet", "seed": i, "dataset": "camvid"})
        prune = b.run("prune", {"method": "l1", "ratio": 0.5, "seed": i}, [(train, "pruned-from")])
        tune = b.run("finetune", {"epochs": 5, "seed": i}, [(prune, "finetuned-from")])
        b.run("eval", {"seed": i}, [(tune, "evaluates"), (train, "baseline-of")])
        i += 1
    return tip


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# what every `runs list` loads: the CLI's libraries and the store's (sqlmodel brings sqlalchemy.orm and pydantic)
FLOOR_IMPORTS = "import typer, rich.console, rich.table, sqlalchemy, pydantic, sqlmodel"
DRIVER_IMPORTS = {"sqlite": "sqlite3, sqlalchemy.dialects.sqlite", "postgresql": "psycopg, sqlalchemy.dialects.postgresql"}


@dataclass
class CliTiming:
    """Best wall and client-CPU seconds of a command, and of the import floor timed alternately with it."""

    wall: float = float("inf")
    cpu: float = float("inf")
    floor: float = float("inf")
    floor_cpu: float = float("inf")
    before: float = float("inf")  # the --before tree's CLI, when given
    before_cpu: float = float("inf")

    def add(self, *, wall: float, cpu: float, floor: float, floor_cpu: float, before: float = float("inf"),
            before_cpu: float = float("inf")) -> None:
        for name, value in locals().items():
            if name != "self":
                setattr(self, name, min(getattr(self, name), value))


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    start, cpu0 = time.perf_counter(), _children_cpu()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:])} failed: {done.stderr.strip()}")
    return time.perf_counter() - start, _children_cpu() - cpu0


def cli_seconds(db: str, *args: str, repeat: int, driver: str, before: Path | None = None) -> CliTiming:
    """Best seconds of a fresh `python -m vss_cli --db DB ARGS` (output discarded), each run followed by
    one of a Python that only imports what such a process cannot do without (typer, which coerces
    options through pydantic; rich; sqlmodel, sqlalchemy and the `driver`'s modules): the part that is not
    vss's, measured at the same moment, so a machine that slows down shows in both. CPU time is the
    client process's own. Bytecode caching is on, as for any installed user
    (`PYTHONDONTWRITEBYTECODE` would recompile every run). With `before` (another checkout), its CLI is
    timed in the same round, so a change is compared with what it replaced at the same moment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", "VSS_QUIET": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [sys.executable, "-m", "vss_cli", "--db", db, *args]
    timing = CliTiming()
    for _ in range(repeat):
        wall, cpu = _timed(argv, env)
        floor, floor_cpu = _timed([sys.executable, "-c", f"{FLOOR_IMPORTS}, {DRIVER_IMPORTS[driver]}"], env)
        old, old_cpu = _timed(argv, {**env, "PYTHONPATH": str(before)}) if before is not None else (wall, cpu)
        timing.add(wall=wall, cpu=cpu, floor=floor, floor_cpu=floor_cpu, before=old, before_cpu=old_cpu)
    return timing


def single_create_ms(store: Store, samples: int = 200) -> tuple[float, float]:
    """Median wall ms, and mean client CPU ms, of one create_run with 20 metrics and one parent."""
    parent = store.create_run(kind="train", config={"bench": "single"})
    times, cpu0 = [], time.process_time()
    for i in range(samples):
        start = time.perf_counter()
        store.create_run(kind="eval", config={"i": i}, parents=[(parent.id, "evaluates")], metrics=metrics(i))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, (time.process_time() - cpu0) / samples * 1000


def measure(label: str, db: str, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    store = Store(db)
    b = Builder(store)
    start, cpu0 = time.perf_counter(), time.process_time()
    bench = build_grid(b, args.cells)
    tip = build_chains(b, args.runs)
    build_s, build_cpu = time.perf_counter() - start, time.process_time() - cpu0
    one_wall, one_cpu = single_create_ms(store)
    rows = [(f"create {b.count} runs, 20 metrics each", f"{build_s:.1f} s ({1000 * build_s / b.count:.2f} ms/run)",
             f"{build_cpu:.1f} s", "", "", "", "(was 270 s for 10 000, 1 metric)"),
            ("create one run + 20 metrics", f"{one_wall:.2f} ms median", f"{one_cpu:.2f} ms", "", "", "",
             "≤ 5 ms (was 27 ms, 1 metric)")]
    store.close()
    r = args.repeat
    for what, cli, target in (
        ("vss --help", ("--help",), "≤ 0.5 s (was 3.8 s)"),
        ("runs list (default table)", ("runs", "list"), "floor + 0.25 s (was 4.4 s)"),
        (f"runs list --limit 100000 json ({b.count} runs)", ("runs", "list", "--limit", "100000", "--format", "json"),
         "floor + 0.6 s (was 41–51 s)"),
        ("runs list --limit 100000 csv", ("runs", "list", "--limit", "100000", "--format", "csv"), "(was 53 s)"),
        ("runs list --limit 100000 table", ("runs", "list", "--limit", "100000"), "—"),
        ("runs list --bench B --method X", ("runs", "list", "--bench", bench, "--method", "method1"), "—"),
        ("runs show (13-deep lineage)", ("runs", "show", tip), "—"),
        (f"runs show bench ({args.cells}-cell subtree)", ("runs", "show", bench), "—"),
        (f"report over a {args.cells}-cell grid", ("report", bench, "--format", "json"), "≤ 2 s"),
    ):
        t = cli_seconds(db, *cli, repeat=r, driver=label, before=args.before)
        before = f"{t.before:.2f} / {t.before_cpu:.2f} s" if args.before is not None else "—"
        rows.append((what, f"{t.wall:.2f} s", f"{t.cpu:.2f} s", f"{t.floor:.2f} / {t.floor_cpu:.2f} s",
                     f"{t.wall - t.floor:+.2f} / {t.cpu - t.floor_cpu:+.2f} s", before, target))
    return [(label, *row) for row in rows]


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("back-end", "operation", "wall", "client CPU", "import floor wall / CPU", "over floor wall / CPU",
              "--before wall / CPU",
              "target (before)")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def fresh_pg_database(url: str) -> str:
    """A new, empty database next to the one in `url` (dropped by hand, or with the server)."""
    name = f"vss_scale_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the database")
    parser.add_argument("--cells", type=int, default=1_000, help="cells of the grid `report` reads")
    parser.add_argument("--pg", default=os.environ.get("VSS_TEST_PG_URL"), help="PostgreSQL URL (also measured)")
    parser.add_argument("--repeat", type=int, default=5, help="CLI timings: best of this many")
    parser.add_argument("--before", type=Path, help="another checkout whose CLI is timed in the same rounds")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += measure("sqlite", str(Path(tmp) / "scale.db"), args)
    if args.pg:
        rows += measure("postgresql", fresh_pg_database(args.pg), args)
    print_table(rows)


if __name__ == "__main__":
    main()
