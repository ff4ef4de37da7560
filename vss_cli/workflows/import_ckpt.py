"""`vss import`: a research-repo checkpoint becomes a vss checkpoint and an `import` run.

Accepted forms: a plain state dict; a dict holding one under `state_dict`, `model`, `net`,
`model_state_dict` or `network` (DataParallel's `module.` prefixes stripped); and, only with
`trust_pickle`, a pickled `nn.Module` (or a dict holding one). Every tensor must find a home in the
named model: the load is strict, and a mismatch lists the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from vss_cli.engine.checkpoint import FORMAT, ModelSpec, save_checkpoint
from vss_cli.engine.progress import log
from vss_cli.errors import CheckpointError, ConfigError
from vss_cli.workflows.common import (
    default_out_dir,
    infer_dataset,
    recorded,
    resolve_device,
    save_artifact,
    versions,
)

WRAPPER_KEYS = ("state_dict", "model", "net", "model_state_dict", "network")
PICKLE_DANGER = ("unpickling runs whatever Python code the file's author put in it (a checkpoint from the "
                 "internet can delete files or steal credentials)")
LISTED = 5


@dataclass
class ImportOptions:
    ckpt: str
    model: str
    dataset: str | None = None  # default: synthetic (or what --data-root's layout shows)
    data_root: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    trust_pickle: bool = False
    save: str | None = None


@dataclass
class ImportOutcome:
    run_id: str
    out_dir: Path
    checkpoint: Path
    source_form: str
    tensors: int


def _load_any(path: Path, trust_pickle: bool):
    """The file's object: tensors-only loading first, full unpickling only when trusted."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass the research repo's .pt/.pth file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_pickle:
            raise CheckpointError(
                f"{path} holds pickled Python objects (e.g. a whole nn.Module), not only tensors; {PICKLE_DANGER}: "
                "pass --trust-pickle only if you trust where the file comes from") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise CheckpointError(f"{path} cannot be read by torch.load ({type(exc).__name__}): pass a PyTorch "
                              "checkpoint") from None
    log(f"--trust-pickle: unpickling {path} ({PICKLE_DANGER})")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{path} pickles a class this Python cannot import ({exc}): install the research "
                              "repo's code, or save its model.state_dict() there and import that") from None


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a loaded checkpoint and how they were found (`state_dict`, `{'net': ...}`, ...)."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        raise ConfigError(f"{path} is already a vss checkpoint: use it directly (no import needed)")
    if isinstance(obj, nn.Module):
        state, form = obj.state_dict(), "pickled module"
    elif _is_state_dict(obj):
        state, form = obj, "state_dict"
    else:
        found = next((k for k in WRAPPER_KEYS if isinstance(obj, dict) and k in obj), None)
        if found is None:
            keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{path} holds no state dict (found {keys}): expected tensors, or one of "
                                  f"{', '.join(WRAPPER_KEYS)} holding them")
        inner = obj[found]
        state = inner.state_dict() if isinstance(inner, nn.Module) else inner
        form = f"{{'{found}': {'module' if isinstance(inner, nn.Module) else 'state_dict'}}}"
        if not _is_state_dict(state):
            raise CheckpointError(f"{path}['{found}'] is not a dict of tensors: pass the file holding the weights")
    return strip_prefix(dict(state)), form


def strip_prefix(state: dict, prefix: str = "module.") -> dict:
    """DataParallel / DDP checkpoints prefix every key with `module.`."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more


def load_strict(model: nn.Module, state: dict, what: str) -> None:
    """Load every tensor into `model`, or raise naming the missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} file {_shape(state[k])} / model {_shape(own[k])}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    problems = [f"{len(v)} {label} ({_listed(v)})" for label, v in
                (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if v]
    if problems:
        raise CheckpointError(f"the checkpoint does not fit {what}: {'; '.join(problems)}: pass the --model, "
                              "--width, --aux-loss and --dataset (class count) it was trained with")
    model.load_state_dict(state, strict=True)


def import_run(opts: ImportOptions, store) -> ImportOutcome:
    """Convert the file, record an `import` run with the vss checkpoint as its artifact."""
    from vss_cli.data import get_spec
    from vss_cli.models import build_model
    from vss_cli.store import config_key, file_sha256

    path = Path(opts.ckpt)
    state, form = extract_state_dict(_load_any(path, opts.trust_pickle), path)
    dataset = infer_dataset(opts.dataset, opts.data_root) or "synthetic"
    dspec = get_spec(dataset, opts.data_root)
    model = build_model(opts.model, dspec.num_classes, **opts.model_kwargs)
    if hasattr(model, "external_state"):  # smp / import-path models: the network's own keys, under the adapter
        state = model.external_state(state)
    options = "".join(f" {k}={v}" for k, v in opts.model_kwargs.items())
    load_strict(model, state, f"{opts.model}{options} with {dspec.num_classes} classes ({dataset})")
    source_sha = file_sha256(path)
    config = {"kind": "import", "source": str(path.resolve()), "source_sha256": source_sha, "source_form": form,
              "model": opts.model, "model_kwargs": dict(opts.model_kwargs), "dataset": dataset,
              "data_root": str(Path(opts.data_root).resolve()) if opts.data_root else None}
    device = resolve_device("cpu")
    run = store.create_run(kind="import", config=config, config_key=config_key(config, [source_sha]),
                           versions=versions(device), status="running")
    out_dir = default_out_dir("import", run.id, opts.save)
    store.update_run(run.id, out_dir=str(out_dir.resolve()))
    with recorded(store, run.id, heartbeat_s=None):
        target = save_artifact(store, run.id, "checkpoint", out_dir / "imported.pt", lambda p: save_checkpoint(
            p, model=model, spec=ModelSpec(opts.model, dspec.num_classes, dict(opts.model_kwargs)),
            dataset={**dspec.to_dict(), "data_root": config["data_root"]},
            extra={"imported_from": config["source"], "source_sha256": source_sha, "source_form": form}))
        store.add_metrics(run.id, {"tensors": len(state), "params": sum(t.numel() for t in model.parameters())})
    return ImportOutcome(run_id=run.id, out_dir=out_dir, checkpoint=target, source_form=form, tensors=len(state))
