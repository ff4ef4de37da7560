"""TensorBoard event files of a training run: the per-epoch scalars the store records (`train_loss`,
`lr`, `val_miou`, ...), under the same names, with the epoch as the step.

A `TensorBoardHook` plugs into `TrainHooks.on_epoch_end`; each run writes to `<dir>/<kind>-<run id>`,
so several runs (a bench's fine-tunes) can share one `--tensorboard DIR` and show up side by side.
Needs the optional `tensorboard` package (`pip install 'vss-cli[tensorboard]'`).
"""

from __future__ import annotations

from pathlib import Path

from vss_cli.errors import ConfigError


def require_tensorboard() -> None:
    """Bad input (before any run row) when `--tensorboard` is asked for without the package."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard "
                          "(or the `tensorboard` extra), or drop --tensorboard") from None


def run_log_dir(root: str | Path, kind: str, run_id: str) -> Path:
    return Path(root) / f"{kind}-{run_id}"


class TensorBoardHook:
    """Call it as `on_epoch_end(epoch, scalars)`; use it as a context manager to close the file."""

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def __call__(self, epoch: int, scalars: dict) -> None:
        for key, value in scalars.items():
            if isinstance(value, (int, float)):
                self._writer.add_scalar(key, float(value), global_step=epoch)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
