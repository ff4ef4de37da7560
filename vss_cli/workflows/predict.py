"""`vss predict`: what a model (and a pruned candidate) predict, as pictures in the dataset's palette.

Per image: the prediction blended over the image (`NNN_<side>.png`) and a panel (`NNN_panel.png`):
image · ground truth · baseline [· candidate · where they differ]; plus `contact_sheet.png` of all
panels. Recorded as a `predict` run with every PNG as an artifact and edges to the model runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vss_cli.data.specs import DatasetSpec
from vss_cli.engine.progress import log, progress_bar
from vss_cli.errors import ConfigError
from vss_cli.pruning.checkpoint import LoadedCheckpoint, load_checkpoint
from vss_cli.report import panels as pn
from vss_cli.workflows.common import default_out_dir, recorded, resolve_device, versions
from vss_cli.workflows.paths import CheckpointRef, choose_input_size, recorded_input_size, resolve_checkpoint

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CONTACT_SHEET = "contact_sheet.png"


@dataclass
class PredictOptions:
    ckpt: str
    candidate: str | None = None
    split: str = "val"
    images: str | None = None  # a folder of pictures instead of a split (no ground truth)
    n: int = 8
    out_dir: str | None = None  # default: runs/predict/<run id>
    dataset: str | None = None  # default: the checkpoint's
    data_root: str | None = None
    input_size: tuple[int, int] | None = None  # default: the dataset's
    device: str = "auto"


@dataclass
class Sample:
    """One picture to predict on: the normalised tensor, the displayable image, the labels if known."""

    name: str
    tensor: torch.Tensor
    image: np.ndarray
    truth: np.ndarray | None


@dataclass
class PredictOutcome:
    run_id: str
    out_dir: Path
    contact_sheet: Path
    panels: list[Path] = field(default_factory=list)
    overlays: list[Path] = field(default_factory=list)


def _check(opts: PredictOptions) -> None:
    from vss_cli.data.specs import SPLITS

    if opts.n < 1:
        raise ConfigError(f"--n {opts.n} must be at least 1")
    if opts.images is None and opts.split not in SPLITS:
        raise ConfigError(f"--split {opts.split} is unknown: use one of {', '.join(SPLITS)}")
    if opts.images is not None and not Path(opts.images).is_dir():
        raise ConfigError(f"--images {opts.images} is not a folder: pass a folder of .png/.jpg pictures")


def _display(tensor: torch.Tensor, spec: DatasetSpec) -> np.ndarray:
    """A normalised 3 × H × W tensor back to an H × W × 3 uint8 picture."""
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    pixels = (tensor.float().cpu() * std + mean).clamp(0, 1).mul(255).round().byte()
    return pixels.permute(1, 2, 0).numpy()


def split_samples(spec: DatasetSpec, split: str, data_root, size, n: int) -> list[Sample]:
    from vss_cli.data import build_dataset

    dataset = build_dataset(spec, split, data_root=data_root, input_size=size, train=False)
    out = []
    for i in range(min(n, len(dataset))):
        tensor, label = dataset[i]
        out.append(Sample(f"{split}_{i:03d}", tensor, _display(tensor, spec), label.numpy()))
    return out


def folder_samples(spec: DatasetSpec, folder: Path, size, n: int) -> list[Sample]:
    from PIL import Image

    from vss_cli.data.transforms import Normalize, ToTensor

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
    if not files:
        raise ConfigError(f"--images {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files: pass a folder of pictures")
    out = []
    for path in files:
        with Image.open(path) as picture:
            rgb = np.asarray(picture.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR))
        tensor, _ = Normalize(spec.mean, spec.std)(*ToTensor()(rgb, np.zeros(size, dtype=np.uint8)))
        out.append(Sample(path.stem, tensor, rgb.copy(), None))
    return out


@torch.no_grad()
def predict_labels(model: torch.nn.Module, tensor: torch.Tensor, device: torch.device) -> np.ndarray:
    """Arg-max class per pixel of one image."""
    model.eval()
    logits = model(tensor.unsqueeze(0).to(device))["out"]
    return logits.argmax(1)[0].cpu().numpy()


def panel_tiles(sample: Sample, spec: DatasetSpec, base: np.ndarray, cand: np.ndarray | None) -> list[pn.Tile]:
    """image · ground truth · baseline [· candidate · differences]."""
    tiles = [pn.Tile("image", sample.image)]
    if sample.truth is not None:
        tiles.append(pn.Tile("ground truth", pn.colourise(sample.truth, spec.palette), labels=True))
    tiles.append(pn.Tile("baseline" if cand is not None else "prediction", pn.colourise(base, spec.palette), True))
    if cand is not None:
        tiles.append(pn.Tile("candidate", pn.colourise(cand, spec.palette), labels=True))
        caption = "differ: red lost, green gained" if sample.truth is not None else "differ (white)"
        tiles.append(pn.Tile(caption, pn.difference(sample.image, base, cand, sample.truth, spec.ignore_index)))
    return tiles


@dataclass
class Setting:
    device: torch.device
    refs: dict[str, CheckpointRef]
    models: dict[str, LoadedCheckpoint]
    spec: DatasetSpec
    data_root: str | None
    input_size: tuple[int, int]


def resolve(opts: PredictOptions, store) -> Setting:
    """Check the options, load the checkpoints and pick the dataset; nothing is written yet."""
    from vss_cli.data import recorded_spec

    _check(opts)
    device = resolve_device(opts.device)
    refs = {"baseline": resolve_checkpoint(store, opts.ckpt, option="--ckpt")}
    if opts.candidate:
        refs["candidate"] = resolve_checkpoint(store, opts.candidate, option="--candidate")
    models = {side: load_checkpoint(ref.path, device) for side, ref in refs.items()}
    recorded_ds = models["baseline"].dataset
    name = opts.dataset or recorded_ds.get("name") or "synthetic"
    spec = recorded_spec(name, opts.data_root or (recorded_ds.get("data_root") if recorded_ds.get("name") == name
                                                  else None), recorded_ds)
    for side, loaded in models.items():
        if loaded.spec.num_classes != spec.num_classes:
            raise ConfigError(f"the {side} {refs[side].path} predicts {loaded.spec.num_classes} classes but "
                              f"{spec.name} has {spec.num_classes}: pass the --dataset it was trained on")
    data_root = opts.data_root or (recorded_ds.get("data_root") if recorded_ds.get("name") == spec.name else None)
    size = choose_input_size(opts.input_size, recorded_input_size(recorded_ds, refs["baseline"].run),
                             spec.default_input_size, recorded_from=str(refs["baseline"].path))
    return Setting(device, refs, models, spec, data_root, size)


def _draw(setting: Setting, samples: list[Sample], out_dir: Path, store, run_id: str) -> PredictOutcome:
    outcome = PredictOutcome(run_id=run_id, out_dir=out_dir, contact_sheet=out_dir / CONTACT_SHEET)
    pictures = []
    with progress_bar("predict", len(samples)) as advance:
        for sample in samples:
            labels = {side: predict_labels(m.model, sample.tensor, setting.device) for side, m in setting.models.items()}
            for side, pred in labels.items():
                path = pn.save_png(pn.overlay(sample.image, pn.colourise(pred, setting.spec.palette)),
                                   out_dir / f"{sample.name}_{side}.png")
                store.add_artifact(run_id, kind="prediction", path=path)
                outcome.overlays.append(path)
            picture = pn.compose_panel(panel_tiles(sample, setting.spec, labels["baseline"], labels.get("candidate")))
            path = pn.save_png(picture, out_dir / f"{sample.name}_panel.png")
            store.add_artifact(run_id, kind="panel", path=path)
            outcome.panels.append(path)
            pictures.append(picture)
            advance(info=sample.name)
    title = f"vss predict {run_id}: {setting.spec.name}, " + " vs ".join(
        f"{side} {ref.run_id or ref.path.name}" for side, ref in setting.refs.items())
    pn.save_png(pn.contact_sheet(pictures, title), outcome.contact_sheet)
    store.add_artifact(run_id, kind="contact-sheet", path=outcome.contact_sheet)
    return outcome


def predict_run(opts: PredictOptions, store) -> PredictOutcome:
    """Predict on `n` images of a split (or a folder) and record a `predict` run with its PNGs."""
    from vss_cli.store import config_key, file_sha256

    setting = resolve(opts, store)
    if opts.images is not None:
        samples = folder_samples(setting.spec, Path(opts.images), setting.input_size, opts.n)
    else:
        samples = split_samples(setting.spec, opts.split, setting.data_root, setting.input_size, opts.n)
    config = {**asdict(opts), "ckpt": None, "candidate": None, "out_dir": None, "device": setting.device.type,
              "dataset": setting.spec.name, "data_root": setting.data_root, "input_size": list(setting.input_size),
              "images": str(Path(opts.images).resolve()) if opts.images else None, "kind": "predict"}
    key = config_key(config, [file_sha256(ref.path) for ref in setting.refs.values()])
    relation = {"baseline": "baseline-of" if "candidate" in setting.refs else "evaluates", "candidate": "evaluates"}
    parents = [(ref.run_id, relation[side]) for side, ref in setting.refs.items() if ref.run_id]
    run = store.create_run(kind="predict", config=config, parents=parents, config_key=key,
                           versions=versions(setting.device), status="running")
    out_dir = default_out_dir("predict", run.id, Path(opts.out_dir) if opts.out_dir else None).resolve()
    store.update_run(run.id, out_dir=str(out_dir))
    with recorded(store, run.id):
        outcome = _draw(setting, samples, out_dir, store, run.id)
        store.add_metrics(run.id, {"images": float(len(samples))})
    log(f"predict run {run.id}: {len(samples)} images -> {outcome.contact_sheet}")
    return outcome


def predict_panels(baseline_ref: str, candidate_ref: str | None, n: int, out_dir: str | Path | None, store, *,
                   input_size: tuple[int, int] | None = None, device: str = "auto") -> PredictOutcome:
    """`n` panels of a baseline against a candidate on the validation split (for `vss bench --predict N`)."""
    opts = PredictOptions(ckpt=str(baseline_ref), candidate=str(candidate_ref) if candidate_ref else None, n=n,
                          out_dir=str(out_dir) if out_dir else None, input_size=input_size, device=device)
    return predict_run(opts, store)
