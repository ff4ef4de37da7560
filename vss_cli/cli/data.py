"""`vss data check` and `vss data synth`."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from vss_cli.cli.options import (
    DataRoot,
    Dataset,
    IgnoreIndex,
    ImgSuffix,
    NumClasses,
    Seed,
    SegSuffix,
    folder_layout,
    parse_list,
    parse_size,
)
from vss_cli.cli.output import console, err_console, render_rows
from vss_cli.cli.state import STATE
from vss_cli.errors import ConfigError, DataError

CHECK_FORMATS = ("table", "json")


def _holds_images(root: Path) -> bool:
    """Whether any image file lies below `root` (a tree with none gets one line, not a table)."""
    return any(p.suffix.lower() in (".png", ".jpg", ".jpeg") for p in Path(root).rglob("*"))


@contextmanager
def check_progress(enabled: bool):
    """A Rich progress bar on stderr fed by the checker's (split, done, total) callback."""
    if not enabled:
        yield None
        return
    with Progress(console=err_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def advance(split: str, done: int, total: int) -> None:
            if split not in tasks:
                tasks[split] = bar.add_task(f"checking {split}", total=total)
            bar.update(tasks[split], completed=done)

        yield advance


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def findings_table(report) -> Table:
    """Errors first; long paths fold onto several lines rather than being cut."""
    table = Table(title="findings")
    table.add_column("severity")
    table.add_column("split")
    table.add_column("path", overflow="fold")
    table.add_column("problem", overflow="fold")
    order = list(SEVERITY_STYLE)
    for finding in sorted(report.findings, key=lambda f: order.index(f.severity)):
        table.add_row(Text(finding.severity, style=SEVERITY_STYLE[finding.severity]), finding.split,
                      finding.path, finding.problem)
    return table


def print_report(report) -> None:
    where = f" at {report.root}" if report.root else ""
    render_rows([vars(c) for c in report.counts], "table", title=f"{report.dataset}{where}",
                columns=("split", "images", "labels", "official"))
    if report.findings:
        console.print(findings_table(report))
    verdict = Text("usable") if report.usable else Text("NOT usable", style="bold red")
    console.print(Text.assemble(f"{report.dataset}: ", verdict, f" ({report.errors} errors, {report.warnings} warnings)"),
                  highlight=False)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Check a dataset tree, or write a synthetic one.", no_args_is_help=True)
    app.add_typer(group, name="data")

    @group.command("check")
    def check(
        dataset: Dataset = None,
        data_root: DataRoot = None,
        split: Annotated[str, typer.Option("--split", help="comma-separated splits to check")] = "train,val",
        fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
        num_classes: NumClasses = None, ignore_index: IgnoreIndex = None, img_suffix: ImgSuffix = None,
        seg_suffix: SegSuffix = None,
    ) -> None:
        """Check a dataset tree file by file; exit 2 when it is not usable."""
        if fmt not in CHECK_FORMATS:
            raise ConfigError(f"--format {fmt} is not supported here: choose table or json")
        from vss_cli.workflows.paths import precheck

        precheck(data_root)  # before torch loads: a typo fails at once
        from vss_cli.data.checks import check_dataset
        from vss_cli.data.detect import infer_dataset

        name = dataset or (infer_dataset(data_root) if data_root is not None else "synthetic")
        with check_progress(fmt == "table" and not STATE.quiet and sys.stderr.isatty()) as progress:
            report = check_dataset(name, data_root, parse_list(split), progress=progress,
                                   **folder_layout(num_classes, ignore_index, img_suffix, seg_suffix))
        if report.root is not None and not _holds_images(report.root):
            raise DataError(f"no images anywhere under {report.root}: point --data-root at the {name} folder "
                            f"(the layout `vss data synth --format {name}` writes; see docs/guide.md#datasets)")
        if fmt == "json":
            sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        else:
            print_report(report)
        if not report.usable:
            raise typer.Exit(2)

    @group.command("synth")
    def synth(
        out: Annotated[Path, typer.Option("--out", help="folder to write the tree into")],
        fmt: Annotated[str, typer.Option("--format", help="cityscapes, camvid or folder (img_dir/ + ann_dir/ + "
                                         "classes.txt, mmsegmentation's custom layout)")] = "cityscapes",
        n: Annotated[int, typer.Option("--n", help="number of scenes over train/val/test (about 60/20/20)")] = 24,
        size: Annotated[str, typer.Option("--size", help="H,W of every image")] = "256,512",
        seed: Seed = 0,
        train_ids: Annotated[bool, typer.Option("--train-ids", help="also write *_gtFine_labelTrainIds.png")] = False,
        color: Annotated[bool, typer.Option("--color", help="also write *_gtFine_color.png")] = False,
    ) -> None:
        """Write synthetic street scenes as a Cityscapes-, CamVid- or image/mask-folder tree."""
        from vss_cli.data.synth import write_tree

        tree = write_tree(out, fmt, n=n, size=parse_size(size), seed=seed, with_train_ids=train_ids,
                          with_color=color)
        console.print(tree.summary(), highlight=False, soft_wrap=True)
