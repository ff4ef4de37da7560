"""Data layer: specs, synthetic scenes, paired transforms, loaders, Cityscapes/CamVid readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vss_cli.data import build_dataset, build_loader, class_weights, dataset_defaults, get_spec, list_datasets
from vss_cli.data.camvid import CamVidSegmentation, median_frequency_weights
from vss_cli.data.cityscapes import CityscapesSegmentation, label_ids_to_train_ids
from vss_cli.data.specs import DatasetSpec
from vss_cli.data.synth import write_tree
from vss_cli.data.synthetic import SyntheticScenes, render_scene, scene_rng
from vss_cli.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    ToTensor,
    eval_transform,
    train_transform,
)
from vss_cli.errors import ConfigError, DataError

SMALL = (32, 48)

# The official Cityscapes table (cityscapesScripts labels.py), written out independently of the code.
OFFICIAL_CITYSCAPES = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255),
    ("out of roi", 3, 255), ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255),
    ("road", 7, 0), ("sidewalk", 8, 1), ("parking", 9, 255), ("rail track", 10, 255),
    ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4), ("guard rail", 14, 255),
    ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9),
    ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14),
    ("bus", 28, 15), ("caravan", 29, 255), ("trailer", 30, 255), ("train", 31, 16),
    ("motorcycle", 32, 17), ("bicycle", 33, 18), ("license plate", -1, 255),
]


# ---- specs ---------------------------------------------------------------------------------------

def test_specs_registry_and_json_round_trip():
    assert set(list_datasets()) >= {"synthetic", "cityscapes", "camvid"}
    assert (get_spec("cityscapes").num_classes, get_spec("camvid").num_classes) == (19, 11)
    synthetic = get_spec("synthetic")
    assert synthetic.num_classes >= 8 and not synthetic.needs_root
    assert synthetic.default_model_kwargs == {"width": 0.25}
    for name in list_datasets():
        spec = dataset_defaults(name)  # a per-tree format (folder) gets its classes only with its root
        assert spec.ignore_index == 255 and len(spec.palette) == spec.num_classes
        assert DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        hash(spec)
    with pytest.raises(ConfigError, match="cityscapes"):
        get_spec("kitti")


# ---- synthetic scenes ----------------------------------------------------------------------------

def test_synthetic_scenes_are_deterministic_per_seed_split_and_index():
    first = render_scene(scene_rng(0, "train", 3), *SMALL)
    again = render_scene(scene_rng(0, "train", 3), *SMALL)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    for other in (scene_rng(0, "train", 4), scene_rng(1, "train", 3), scene_rng(0, "val", 3)):
        assert not np.array_equal(first[0], render_scene(other, *SMALL)[0])
    image, label = first
    assert image.shape == (*SMALL, 3) and image.dtype == np.uint8
    assert label.shape == SMALL and label.dtype == np.uint8


def test_synthetic_scenes_cover_the_classes_and_have_ignore_pixels():
    labels = np.stack([render_scene(scene_rng(0, "train", i), 64, 96)[1] for i in range(6)])
    present = set(np.unique(labels).tolist())
    assert len(present - {255}) >= 6
    assert 255 in present
    assert present <= set(range(get_spec("synthetic").num_classes)) | {255}


def test_synthetic_dataset_renders_once_at_any_size():
    data = SyntheticScenes("val", n=5, size=(24, 40))
    assert len(data) == 5 and data.images.shape == (5, 24, 40, 3)
    assert SyntheticScenes("val", n=5, size=(24, 40)).images is data.images  # cached
    with pytest.raises(ConfigError, match="split"):
        SyntheticScenes("holdout")


# ---- transforms ----------------------------------------------------------------------------------

def _coded_pair(height=16, width=24):
    """A label of 4 big blocks and an image whose red channel encodes the label (label * 50)."""
    label = np.zeros((height, width), np.uint8)
    label[: height // 2, width // 2:] = 1
    label[height // 2:, : width // 2] = 2
    label[height // 2:, width // 2:] = 3
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = label * 50
    image[..., 1] = np.arange(width, dtype=np.uint8)[None, :]  # column marker
    return image, label


def test_flip_moves_image_and_label_together():
    image, label = _coded_pair()
    flipped_image, flipped_label = RandomHorizontalFlip(p=1.0)(image, label)
    assert torch.equal(flipped_label, torch.from_numpy(label[:, ::-1].copy()))
    assert torch.equal(flipped_image[0], flipped_label.to(torch.uint8) * 50)
    assert flipped_image[1, 0, 0] == image.shape[1] - 1


def test_crop_pads_label_with_ignore_and_image_with_zero():
    torch.manual_seed(0)
    image, label = _coded_pair(8, 8)
    out_image, out_label = RandomCrop((12, 10))(image, label)
    assert out_label.shape == (12, 10) and out_image.shape == (3, 12, 10)
    assert (out_label[8:] == 255).all() and (out_label[:, 8:] == 255).all()
    assert (out_image[:, 8:] == 0).all()
    assert torch.equal(out_label[:8, :8], torch.from_numpy(label))


def test_random_scale_crop_keep_alignment():
    image, label = _coded_pair(32, 48)
    pipeline = Compose([RandomScale(0.5, 2.0, base_size=(32, 48)), RandomCrop((32, 48)), RandomHorizontalFlip(),
                        ToTensor()])
    torch.manual_seed(1)
    for _ in range(5):
        out_image, out_label = pipeline(image, label)
        assert out_image.dtype == torch.float32 and out_label.dtype == torch.int64
        valid = out_label != 255
        agree = (out_image[0][valid] * 255 - out_label[valid] * 50).abs() < 26
        assert agree.float().mean() > 0.9  # only block borders may blend


def test_resize_uses_nearest_for_labels_and_eval_keeps_full_resolution():
    image, label = _coded_pair(16, 24)
    _, resized = Resize((7, 11))(image, label)
    assert set(resized.unique().tolist()) <= {0, 1, 2, 3}
    full_image, full_label = eval_transform(None)(image, label)
    assert full_image.shape == (3, 16, 24) and full_label.shape == (16, 24)
    train_image, train_label = train_transform((8, 12))(image, label)
    assert train_image.shape == (3, 8, 12) and train_label.shape == (8, 12)


# ---- build_dataset / build_loader ----------------------------------------------------------------

def test_build_dataset_synthetic_gives_normalised_tensors():
    data = build_dataset("synthetic", "val", input_size=SMALL)
    image, label = data[0]
    assert image.shape == (3, *SMALL) and image.dtype == torch.float32
    assert label.shape == SMALL and label.dtype == torch.int64
    assert -3 < image.mean() < 3 and image.std() > 0.2
    assert set(label.unique().tolist()) <= set(range(8)) | {255}
    same = build_dataset("synthetic", "val", input_size=SMALL, seed=7)  # a run's seed never changes the data
    assert torch.equal(same[0][1], label)
    train = build_dataset("synthetic", "train", input_size=SMALL, train=True)
    assert train[0][0].shape == (3, *SMALL)
    with pytest.raises(ConfigError, match="split"):
        build_dataset("synthetic", "holdout")
    with pytest.raises(DataError, match="--data-root"):
        build_dataset("cityscapes", "train")


def test_build_loader_shuffles_reproducibly_and_drops_ragged_batches():
    data = build_dataset("synthetic", "val", input_size=(16, 24))

    def first_labels(seed):
        return next(iter(build_loader(data, batch_size=5, train=True, seed=seed)))[1]

    assert torch.equal(first_labels(3), first_labels(3))
    assert not torch.equal(first_labels(3), first_labels(4))
    train_loader = build_loader(data, batch_size=5, train=True)
    assert len(train_loader) == len(data) // 5
    assert len(build_loader(data, batch_size=5, train=False)) == -(-len(data) // 5)


# ---- Cityscapes ----------------------------------------------------------------------------------

def test_label_ids_to_train_ids_matches_the_official_table():
    ids = np.array([row[1] for row in OFFICIAL_CITYSCAPES])
    expected = np.array([row[2] for row in OFFICIAL_CITYSCAPES])
    assert len(OFFICIAL_CITYSCAPES) == 35
    assert np.array_equal(label_ids_to_train_ids(ids), expected)
    assert np.array_equal(label_ids_to_train_ids(ids.astype(np.int16).reshape(5, 7)), expected.reshape(5, 7))
    assert label_ids_to_train_ids(np.array([34, 200, 255])).tolist() == [255, 255, 255]


@pytest.fixture(scope="module")
def cityscapes_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    write_tree(root, "cityscapes", n=5, size=(24, 40), seed=0)
    return root


def test_cityscapes_reader_maps_label_ids_and_rejects_test(cityscapes_tree, tmp_path):
    data = CityscapesSegmentation(cityscapes_tree, "train")
    raw = np.array(Image.open(data.samples[0][1]))
    assert data.samples[0][1].name.endswith("_gtFine_labelIds.png")
    assert np.array_equal(data.raw_label(0), label_ids_to_train_ids(raw))
    assert set(np.unique(data.raw_label(0)).tolist()) <= set(range(19)) | {255}
    image, label = build_dataset("cityscapes", "val", data_root=cityscapes_tree, input_size=(12, 20))[0]
    assert image.shape == (3, 12, 20) and label.dtype == torch.int64
    with pytest.raises(DataError, match="test"):
        build_dataset("cityscapes", "test", data_root=cityscapes_tree)
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        CityscapesSegmentation(tmp_path / "nowhere", "train")


def test_cityscapes_train_ids_are_preferred_and_agree(tmp_path):
    write_tree(tmp_path, "cityscapes", n=3, size=(16, 24), with_train_ids=True, with_color=True)
    data = CityscapesSegmentation(tmp_path, "train")
    label_path = data.samples[0][1]
    assert label_path.name.endswith("_gtFine_labelTrainIds.png")
    ids_path = label_path.with_name(label_path.name.replace("labelTrainIds", "labelIds"))
    assert np.array_equal(data.raw_label(0), label_ids_to_train_ids(np.array(Image.open(ids_path))))


# ---- CamVid --------------------------------------------------------------------------------------

def test_camvid_reader_maps_void_and_out_of_range_to_ignore(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "trainannot").mkdir()
    label = np.array([[0, 3, 10, 11], [12, 5, 11, 200]], np.uint8)
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(tmp_path / "train" / "a.png")
    Image.fromarray(label).save(tmp_path / "trainannot" / "a.png")
    _, mapped = CamVidSegmentation(tmp_path, "train")[0]
    assert mapped.tolist() == [[0, 3, 10, 255], [255, 5, 255, 255]]


def test_median_frequency_weights():
    labels = [np.array([[0, 0, 0, 1]], np.uint8), np.array([[0, 2, 2, 255]], np.uint8)]
    weights = median_frequency_weights(labels, num_classes=4)
    # freq: class 0 = 4/8, class 1 = 1/4, class 2 = 2/4; median 0.5; class 3 never occurs
    assert torch.allclose(weights, torch.tensor([1.0, 2.0, 1.0, 0.0]))


def test_camvid_synth_tree_loads(tmp_path):
    write_tree(tmp_path, "camvid", n=3, size=(16, 24))
    image, label = build_dataset("camvid", "test", data_root=tmp_path, input_size=(16, 24))[0]
    assert image.shape == (3, 16, 24)
    assert set(label.unique().tolist()) <= set(range(11)) | {255}
    assert median_frequency_weights(tmp_path).shape == (11,)
    weights = class_weights("camvid", tmp_path)
    assert weights.shape == (11,) and (weights >= 0).all() and weights.max() > 0


def test_shard_sampler_covers_every_item_once():
    from vss_cli.data import ShardSampler

    data = list(range(10))
    shards = [list(ShardSampler(data, rank=r, world=3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == data
