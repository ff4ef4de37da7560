"""Built-in street-like scenes, rendered in memory with numpy from (seed, split, index).

A scene is sky over buildings, a road narrowing to a vanishing point with sidewalks beside it, trees,
poles, people and cars, plus a few void (ignore) pixels. Class colours are jittered per scene and
textured per pixel so that colour alone does not separate the classes (road vs sidewalk, building vs
vegetation, overcast sky vs facade): a model also needs texture and position.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from torch.utils.data import Dataset

from vss_cli.data.specs import IGNORE_INDEX, SPLITS, SYNTHETIC
from vss_cli.errors import ConfigError

CLASS_ID = {name: i for i, name in enumerate(SYNTHETIC.class_names)}
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, SKY, PERSON, CAR = (
    CLASS_ID[n] for n in ("road", "sidewalk", "building", "pole", "vegetation", "sky", "person", "car")
)

FACADE_TONES = np.array(
    [(185, 165, 135), (150, 85, 65), (125, 125, 130), (110, 88, 62), (112, 118, 82), (160, 150, 145)],
    dtype=np.float32,
)
CAR_TONES = np.array(
    [(170, 30, 30), (30, 50, 150), (225, 225, 225), (35, 35, 40), (150, 155, 160), (40, 110, 60), (200, 170, 40)],
    dtype=np.float32,
)


@dataclass
class Canvas:
    """The image being painted (float RGB) and its label map, with broadcastable pixel coordinates."""

    image: np.ndarray
    label: np.ndarray
    ys: np.ndarray  # (H, 1) pixel-centre rows
    xs: np.ndarray  # (1, W) pixel-centre columns

    @property
    def height(self) -> int:
        return self.label.shape[0]

    @property
    def width(self) -> int:
        return self.label.shape[1]

    def paint(self, mask: np.ndarray, class_id: int, color, texture: np.ndarray | None = None) -> None:
        """Set the pixels under `mask` to `class_id` and `color` (+ a per-pixel brightness texture)."""
        mask = np.broadcast_to(mask, self.label.shape)
        color = np.asarray(color, dtype=np.float32)
        values = color if color.ndim == 1 else np.broadcast_to(color, self.image.shape)[mask]
        if texture is not None:
            values = values + np.broadcast_to(texture, self.label.shape)[mask][:, None]
        self.image[mask] = values
        self.label[mask] = class_id


@dataclass(frozen=True)
class Layout:
    """Scene geometry: horizon row, vanishing column, road/sidewalk half-widths at the bottom row."""

    horizon: float
    vanish_x: float
    road_half: float
    walk_half: float
    bottom: float

    def depth(self, y):
        """0 at the horizon, 1 at the bottom row (perspective scale of things standing at row y)."""
        return np.clip((y - self.horizon) / (self.bottom - self.horizon), 0.0, 1.0)


def value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a random grid every `cell` pixels, bilinearly interpolated."""
    cell = max(float(cell), 1.0)
    grid = rng.uniform(-1.0, 1.0, (int(height / cell) + 2, int(width / cell) + 2)).astype(np.float32)
    gy, gx = np.arange(height) / cell, np.arange(width) / cell
    y0, x0 = gy.astype(int), gx.astype(int)
    fy, fx = (gy - y0)[:, None].astype(np.float32), (gx - x0)[None, :].astype(np.float32)
    top = grid[np.ix_(y0, x0)] * (1 - fx) + grid[np.ix_(y0, x0 + 1)] * fx
    bottom = grid[np.ix_(y0 + 1, x0)] * (1 - fx) + grid[np.ix_(y0 + 1, x0 + 1)] * fx
    return top * (1 - fy) + bottom * fy


def ellipse(canvas: Canvas, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((canvas.ys - cy) / max(ry, 0.5)) ** 2 + ((canvas.xs - cx) / max(rx, 0.5)) ** 2 <= 1.0


def box(canvas: Canvas, top: float, bottom: float, left: float, right: float) -> np.ndarray:
    return (canvas.ys >= top) & (canvas.ys < bottom) & (canvas.xs >= left) & (canvas.xs < right)


def jitter(rng: np.random.Generator, color, amount: float) -> np.ndarray:
    return np.asarray(color, dtype=np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


def sample_layout(rng: np.random.Generator, height: int, width: int) -> Layout:
    road_half = rng.uniform(0.28, 0.42) * width
    return Layout(
        horizon=rng.uniform(0.36, 0.5) * height,
        vanish_x=rng.uniform(0.35, 0.65) * width,
        road_half=road_half,
        walk_half=road_half * rng.uniform(1.4, 1.75),
        bottom=float(height),
    )


def paint_sky(canvas: Canvas, rng: np.random.Generator, layout: Layout) -> None:
    """A vertical gradient over the whole frame: blue, or grey-white when overcast."""
    if rng.random() < 0.3:
        top, low = jitter(rng, (165, 170, 178), 15), jitter(rng, (215, 215, 218), 12)
    else:
        top, low = jitter(rng, (55, 105, 175), 20), jitter(rng, (165, 195, 225), 20)
    t = np.clip(canvas.ys / max(layout.horizon, 1.0), 0.0, 1.0)[..., None]
    canvas.paint(np.ones_like(canvas.label, dtype=bool), SKY, top + (low - top) * t)


def paint_buildings(canvas: Canvas, rng: np.random.Generator, layout: Layout, texture: np.ndarray) -> list:
    """A row of facades with window grids, standing down to the bottom row; gaps are left as sky."""
    h, w = canvas.height, canvas.width
    gaps = []
    x = -rng.uniform(0, 0.1) * w
    while x < w:
        right = x + rng.uniform(0.14, 0.32) * w
        if rng.random() < 0.18:
            gaps.append((x, right))
        else:
            top = rng.uniform(0.04 * h, max(layout.horizon - 0.12 * h, 0.05 * h))
            facade = jitter(rng, FACADE_TONES[rng.integers(len(FACADE_TONES))], 18)
            body = box(canvas, top, h, x, right)
            canvas.paint(body, BUILDING, facade, texture * 8)
            paint_windows(canvas, rng, body, facade, top, x)
        x = right
    return gaps


def paint_windows(canvas: Canvas, rng: np.random.Generator, body: np.ndarray, facade, top: float, left: float) -> None:
    period_y = max(3.0, canvas.height * rng.uniform(0.07, 0.1))
    period_x = max(3.0, canvas.width * rng.uniform(0.045, 0.07))
    pane = ((canvas.ys - top - 1) % period_y < period_y * 0.5) & ((canvas.xs - left - 1) % period_x < period_x * 0.5)
    glass = facade * rng.uniform(0.35, 0.6) if rng.random() < 0.7 else jitter(rng, (95, 125, 150), 20)
    canvas.paint(body & pane, BUILDING, glass)


def paint_gap_vegetation(canvas: Canvas, rng: np.random.Generator, layout: Layout, gaps: list, leaves: np.ndarray) -> None:
    """Hedges/grass fill the ground between buildings (below the horizon)."""
    for left, right in gaps:
        region = box(canvas, layout.horizon - rng.uniform(0, 0.08) * canvas.height, canvas.height, left, right)
        canvas.paint(region, VEGETATION, jitter(rng, (80, 125, 50), 20), leaves)


def paint_ground(canvas: Canvas, rng: np.random.Generator, layout: Layout, fine: np.ndarray) -> None:
    """Sidewalks (tiled, lighter) then the road (smooth asphalt, lane dashes), both in perspective."""
    depth = layout.depth(canvas.ys)
    offset = np.abs(canvas.xs - layout.vanish_x)
    below = canvas.ys > layout.horizon
    walk = below & (offset < depth * layout.walk_half)
    road = below & (offset < depth * layout.road_half)
    tile = np.maximum(2.0, 7.0 * depth)
    grout = ((canvas.ys % tile) < 0.8) | (((canvas.xs - layout.vanish_x) % (tile * 1.5)) < 0.8)
    walk_color = jitter(rng, (150, 140, 132), 22)
    canvas.paint(walk, SIDEWALK, walk_color, np.where(grout, -28.0, 0.0) + fine * 5)
    asphalt = jitter(rng, (100, 100, 106), 18)
    canvas.paint(road, ROAD, asphalt, fine * 4)
    if rng.random() < 0.7:
        dash = np.maximum(1.5, 6.0 * depth)
        lane = road & (offset < np.maximum(0.6, 0.012 * canvas.width * depth)) & ((canvas.ys % (2 * dash)) < dash)
        canvas.paint(lane, ROAD, jitter(rng, (225, 220, 200), 15))


def paint_trees(canvas: Canvas, rng: np.random.Generator, layout: Layout, leaves: np.ndarray) -> None:
    """Blobby canopies (a union of discs with ragged edges) beside the road, over facades and sky."""
    h = canvas.height
    for _ in range(rng.integers(0, 4)):
        side = rng.choice([-1.0, 1.0])
        cx = layout.vanish_x + side * rng.uniform(0.45, 1.1) * layout.walk_half
        cy = rng.uniform(layout.horizon - 0.28 * h, layout.horizon + 0.02 * h)
        radius = rng.uniform(0.1, 0.17) * h
        crown = np.zeros_like(canvas.label, dtype=bool)
        for _ in range(rng.integers(3, 6)):
            dy, dx = rng.normal(0, 0.45 * radius, 2)
            r = radius * rng.uniform(0.55, 0.9)
            crown |= ellipse(canvas, cy + dy, cx + dx, r, r * rng.uniform(0.9, 1.3))
        ragged = crown & (leaves > -0.6 * rng.random())
        trunk = box(canvas, cy, min(h, cy + 2.2 * radius), cx - 0.08 * radius - 0.5, cx + 0.08 * radius + 0.5)
        canvas.paint(trunk, VEGETATION, jitter(rng, (85, 65, 45), 12), leaves * 6)
        canvas.paint(ragged | (crown & ellipse(canvas, cy, cx, radius, radius)), VEGETATION,
                     jitter(rng, (75, 118, 45), 25), leaves * 22)


def sidewalk_spot(rng: np.random.Generator, layout: Layout, height: int, near: float = 0.15) -> tuple[float, float, float]:
    """A random foot point (y, x, depth) on one of the sidewalks."""
    y = layout.horizon + rng.uniform(near, 1.0) * (height - layout.horizon)
    depth = float(layout.depth(y))
    side = rng.choice([-1.0, 1.0])
    lateral = rng.uniform(layout.road_half, layout.walk_half) * depth
    return y, layout.vanish_x + side * lateral, depth


def paint_poles(canvas: Canvas, rng: np.random.Generator, layout: Layout) -> None:
    """Thin metal poles standing on the sidewalk, with a lit edge."""
    for _ in range(rng.integers(1, 4)):
        y, x, depth = sidewalk_spot(rng, layout, canvas.height, near=0.25)
        half = max(3.0, 0.04 * canvas.width * (0.4 + depth)) / 2
        top = y - canvas.height * rng.uniform(0.55, 0.85) * (0.4 + 0.6 * depth)
        metal = jitter(rng, (80, 84, 90), 20)
        canvas.paint(box(canvas, top, y, x - half, x + half), POLE, metal)
        canvas.paint(box(canvas, top, y, x - half, x - half + 1), POLE, metal + 45)


def paint_people(canvas: Canvas, rng: np.random.Generator, layout: Layout) -> None:
    """Upright pedestrians on the sidewalk: coloured top, dark trousers, a head."""
    for _ in range(rng.integers(1, 5)):
        y, x, depth = sidewalk_spot(rng, layout, canvas.height, near=0.3)
        tall = max(10.0, canvas.height * rng.uniform(0.28, 0.42) * (0.4 + 0.6 * depth))
        body = ellipse(canvas, y - 0.42 * tall, x, 0.42 * tall, max(2.2, 0.2 * tall))
        head = ellipse(canvas, y - 0.9 * tall, x, max(1.2, 0.1 * tall), max(1.2, 0.09 * tall))
        canvas.paint(body, PERSON, rng.uniform(20, 230, 3))
        canvas.paint(body & (canvas.ys > y - 0.4 * tall), PERSON, jitter(rng, (45, 45, 70), 25))
        canvas.paint(head, PERSON, jitter(rng, (200, 160, 130), 25))


def paint_cars(canvas: Canvas, rng: np.random.Generator, layout: Layout) -> None:
    """Boxes on the road (far ones first), with a window band and dark wheels."""
    h = canvas.height
    feet = sorted(layout.horizon + rng.uniform(0.25, 1.05, rng.integers(0, 4)) * (h - layout.horizon))
    for y in feet:
        depth = float(layout.depth(y))
        wide = max(6.0, canvas.width * rng.uniform(0.2, 0.3) * (0.3 + 0.7 * depth))
        tall = wide * rng.uniform(0.55, 0.75)
        x = layout.vanish_x + rng.uniform(-0.7, 0.7) * layout.road_half * depth
        left, right, top = x - wide / 2, x + wide / 2, y - tall
        paint_color = jitter(rng, CAR_TONES[rng.integers(len(CAR_TONES))], 20)
        canvas.paint(box(canvas, top + 0.3 * tall, y - 0.1 * tall, left, right), CAR, paint_color)
        canvas.paint(box(canvas, top, top + 0.3 * tall, left + 0.15 * wide, right - 0.15 * wide), CAR,
                     paint_color * 0.9)
        canvas.paint(box(canvas, top + 0.05 * tall, top + 0.28 * tall, left + 0.2 * wide, right - 0.2 * wide), CAR,
                     jitter(rng, (50, 60, 75), 12))
        wheel = (0.13 * wide, 0.12 * tall)
        for wx in (left + 0.2 * wide, right - 0.2 * wide):
            canvas.paint(ellipse(canvas, y - wheel[1], wx, wheel[1] * 1.1, wheel[0]), CAR, jitter(rng, (22, 22, 24), 6))


def paint_void(canvas: Canvas, rng: np.random.Generator) -> None:
    """Unlabelled things (ignore index): a few small odd-coloured blobs, sometimes an ego-vehicle hood."""
    h, w = canvas.height, canvas.width
    for _ in range(rng.integers(1, 3)):
        r = rng.uniform(0.03, 0.06) * h + 0.7
        blob = ellipse(canvas, rng.uniform(0, h), rng.uniform(0, w), r, r * rng.uniform(0.7, 1.6))
        canvas.paint(blob, IGNORE_INDEX, rng.uniform(0, 255, 3))
    if rng.random() < 0.3:
        hood = ellipse(canvas, h + 0.02 * h, w / 2, rng.uniform(0.05, 0.09) * h, 0.6 * w)
        canvas.paint(hood, IGNORE_INDEX, jitter(rng, (30, 30, 35), 10))


def finish(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Global illumination/contrast jitter and per-pixel sensor noise, then 8-bit."""
    gain = rng.uniform(0.8, 1.15)
    bias = rng.uniform(-12, 12)
    noise = rng.standard_normal(canvas.image.shape, dtype=np.float32) * rng.uniform(3.0, 8.0)
    return np.clip(canvas.image * gain + bias + noise, 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (image uint8 [H, W, 3], label uint8 [H, W] with 255 = ignore)."""
    canvas = Canvas(
        image=np.zeros((height, width, 3), np.float32),
        label=np.zeros((height, width), np.uint8),
        ys=np.arange(height, dtype=np.float32)[:, None] + 0.5,
        xs=np.arange(width, dtype=np.float32)[None, :] + 0.5,
    )
    layout = sample_layout(rng, height, width)
    fine = value_noise(rng, height, width, 1.5)
    leaves = value_noise(rng, height, width, max(2.0, height / 12))
    paint_sky(canvas, rng, layout)
    gaps = paint_buildings(canvas, rng, layout, fine)
    paint_gap_vegetation(canvas, rng, layout, gaps, leaves * 18 + fine * 10)
    paint_ground(canvas, rng, layout, fine)
    paint_trees(canvas, rng, layout, leaves + 0.5 * fine)
    paint_poles(canvas, rng, layout)
    paint_people(canvas, rng, layout)
    paint_cars(canvas, rng, layout)
    paint_void(canvas, rng)
    return finish(canvas, rng), canvas.label


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of scene `index` of `split`: scenes are independent of each other and of n."""
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])


@lru_cache(maxsize=4)
def render_split(seed: int, split: str, n: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """All scenes of a split as read-only arrays (images [n, H, W, 3], labels [n, H, W]); cached."""
    height, width = size
    images = np.empty((n, height, width, 3), np.uint8)
    labels = np.empty((n, height, width), np.uint8)
    for i in range(n):
        images[i], labels[i] = render_scene(scene_rng(seed, split, i), height, width)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


class SyntheticScenes(Dataset):
    """The built-in dataset: `n` scenes of `split` rendered once at `size` (H, W) from `seed`."""

    def __init__(self, split: str = "train", n: int | None = None, size: tuple[int, int] | None = None,
                 seed: int = 0, transform=None) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
        self.split = split
        self.size = tuple(size or SYNTHETIC.default_input_size)
        n = SYNTHETIC.split_sizes[split] if n is None else int(n)
        self.images, self.labels = render_split(int(seed), split, n, self.size)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def raw_label(self, index: int) -> np.ndarray:
        """The untransformed label map (for class statistics)."""
        return self.labels[index]

    def __getitem__(self, index: int):
        image, label = self.images[index], self.labels[index]
        return self.transform(image, label) if self.transform is not None else (image, label)
