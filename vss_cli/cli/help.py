"""`--help` layout: option names never cut, help text in one flowing column, no hard line breaks.

typer's own options panel gives the names, their `--no-` forms and the type four columns of their own,
so at 80 columns a long option name is cut (`--reconstruction-batc…`) and the help gets ~22
characters. `options_panel` replaces it (installed by `install()`): one column with the option's names
(its `--no-` form on the line below), one with the type, the rest for the help. `unwrap_help` joins
the hard line breaks of a command's docstring into paragraphs that wrap at the terminal's width.
`assign_panels` puts the options of the long commands in groups (typer's `rich_help_panel`): data,
model, training, pruning, fine-tuning, evaluation, speed, grid, cluster; an option in no group stays
under "Options".
"""

from __future__ import annotations

import re

from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def unwrap_help(text: str | None) -> str | None:
    """Paragraphs (blank-line separated) as single lines; list items (`-`, `*`, `•`) keep their line."""
    if not text:
        return text
    import inspect

    paragraphs = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines = para.split("\n")
        out = [lines[0]]
        for line in lines[1:]:
            if re.match(r"\s*([-*•]|\d+\.)\s", line) or line.startswith("  "):
                out.append(line)
            else:
                out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        paragraphs.append("\n".join(out))
    return "\n\n".join(paragraphs)


def options_panel(*, name, params, ctx, markup_mode, console) -> None:
    """typer's `_print_options_panel`, laid out as names | type | help (see the module docstring)."""
    from typer import rich_utils as ru

    if not params:
        return
    table = Table(show_header=False, box=None, padding=(0, 1), expand=True, pad_edge=False)
    table.add_column("name", no_wrap=True, style=ru.STYLE_OPTION)
    table.add_column("type", no_wrap=True, style=ru.STYLE_TYPES)
    table.add_column("help", ratio=1, overflow="fold")
    for param in params:
        names = Text(", ".join(param.opts), style=ru.STYLE_OPTION)
        if param.secondary_opts:
            names.append("\n" + ", ".join(param.secondary_opts), style=ru.STYLE_NEGATIVE_OPTION)
        if param.required:
            names.append(" *", style=ru.STYLE_REQUIRED_SHORT)
        kind = param.display_type_rich(ctx=ctx) if hasattr(param, "display_type_rich") else None
        table.add_row(names, Text(kind or ""), ru._get_parameter_help(param=param, ctx=ctx, markup_mode=markup_mode))
    console.print(Panel(table, border_style=ru.STYLE_OPTIONS_PANEL_BORDER, title=name,
                        title_align=ru.ALIGN_OPTIONS_PANEL))


DATA, MODEL, TRAINING, PRUNING = "Data", "Model", "Training", "Pruning"
FINETUNING, EVALUATION, SPEED, GRID, CLUSTER = "Fine-tuning", "Evaluation", "Speed", "Grid", "Cluster"
PANELS = {  # option (parameter name) -> its group, in every command below unless PANEL_OVERRIDES says otherwise
    **dict.fromkeys(("dataset", "data_root", "input_size", "num_workers", "split"), DATA),
    **dict.fromkeys(("model", "width", "aux_loss", "pretrained_backbone", "backbone_weights", "baseline_epochs"),
                    MODEL),
    **dict.fromkeys(("epochs", "batch_size", "lr", "weight_decay", "scheduler", "warmup_epochs", "slimming_lambda",
                     "amp", "amp_dtype", "seed", "class_weights", "sync_bn", "max_iters_per_epoch", "resume"),
                    TRAINING),
    **dict.fromkeys(("method", "global_ratio", "round_to", "allocation", "normalizer", "budget", "samples",
                     "sparse_epochs", "fgp_share", "target_macs", "option", "prune_batch_size"), PRUNING),
    **dict.fromkeys(("finetune_epochs", "finetune_lr"), FINETUNING),
    **dict.fromkeys(("oracle_samples", "oracle_layers", "oracle_methods", "reconstruction_batches", "predict"),
                    EVALUATION),
    **dict.fromkeys(("speed_check_iters", "require_speedup", "fuse_bn", "compile", "cuda_graphs", "dtype",
                     "channels_last", "speed_iters", "warmup"), SPEED),
    **dict.fromkeys(("methods", "ratios", "seeds", "out_dir", "skip_existing", "force_new"), GRID),
    **dict.fromkeys(("join", "prepare_only", "worker_grace", "nproc_per_cell"), CLUSTER),
}
PANEL_OVERRIDES = {
    "prune": {"batch_size": PRUNING, "seed": PRUNING},
    "eval": {"batch_size": EVALUATION},
    "bench": {"batch_size": EVALUATION, "max_iters_per_epoch": FINETUNING, "tensorboard": FINETUNING,
              "baseline": MODEL},
}
PANELLED = ("train", "finetune", "prune", "eval", "bench")  # the commands with enough options to group


def assign_panels(cmd) -> None:
    """Set each option's `rich_help_panel` (see PANELS) on a long command; others are left as they are."""
    if cmd.name not in PANELLED:
        return
    overrides = PANEL_OVERRIDES.get(cmd.name, {})
    for param in cmd.params:
        panel = overrides.get(param.name, PANELS.get(param.name))
        if panel and getattr(param, "rich_help_panel", None) is None:
            param.rich_help_panel = panel
    order = [None, GRID, MODEL, DATA, TRAINING, PRUNING, FINETUNING, EVALUATION, SPEED, CLUSTER]
    cmd.params.sort(key=lambda p: order.index(getattr(p, "rich_help_panel", None)))  # panels print in this order


def install() -> None:
    """Use `options_panel` for every command's --help."""
    from typer import rich_utils

    rich_utils._print_options_panel = options_panel
