"""Prediction pictures from label maps (numpy + Pillow, no torch): palette colouring, overlays, the
side-by-side panel (image · ground truth · baseline · candidate · where they differ) and the contact
sheet. Label tiles are resized with nearest neighbour only, so their pixels are palette colours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vss_cli.fileio import atomic_output

IGNORE_COLOUR = (0, 0, 0)  # void / ignore pixels, as in the Cityscapes and SegNet colour tables
LOST, GAINED, BOTH_WRONG, CHANGED = (230, 25, 75), (60, 180, 75), (255, 225, 25), (255, 255, 255)
TITLE_HEIGHT = 14  # pixels of the caption strip above each tile
GAP = 4  # pixels between tiles and between panels
MIN_TILE_WIDTH, MAX_TILE_WIDTH = 192, 512
OVERLAY_ALPHA = 0.5


@dataclass(frozen=True)
class Tile:
    """One picture of a panel and its caption; `labels` marks a colour-coded label map."""

    title: str
    pixels: np.ndarray  # uint8 H × W × 3
    labels: bool = False


def colourise(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """H × W class ids -> H × W × 3 palette colours; ignore (and any out-of-range) ids are black."""
    table = np.array([*palette, IGNORE_COLOUR], dtype=np.uint8)
    ids = np.asarray(labels).astype(np.int64)
    return table[np.where((ids >= 0) & (ids < len(palette)), ids, len(palette))]


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The colour map blended over the image (alpha = weight of the colours)."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def difference(image: np.ndarray, baseline: np.ndarray, candidate: np.ndarray,
               truth: np.ndarray | None = None, ignore_index: int = 255) -> np.ndarray:
    """Where the two predictions differ, over the dimmed grey image: with ground truth, red where the
    candidate lost a correct pixel, green where it gained one, yellow where both are wrong; white without."""
    grey = image.astype(np.float32).mean(axis=2, keepdims=True) * 0.35
    out = np.repeat(np.rint(grey), 3, axis=2).astype(np.uint8)
    changed = baseline != candidate
    if truth is None:
        out[changed] = CHANGED
        return out
    valid = truth != ignore_index
    base_ok, cand_ok = baseline == truth, candidate == truth
    out[changed & valid & base_ok] = LOST
    out[changed & valid & cand_ok] = GAINED
    out[changed & valid & ~base_ok & ~cand_ok] = BOTH_WRONG
    out[changed & ~valid] = CHANGED
    return out


def tile_size(height: int, width: int) -> tuple[int, int]:
    """Display size of a tile: small images are enlarged by a whole factor, large ones shrunk."""
    if width < MIN_TILE_WIDTH:
        factor = math.ceil(MIN_TILE_WIDTH / width)
        return height * factor, width * factor
    if width > MAX_TILE_WIDTH:
        return max(1, round(height * MAX_TILE_WIDTH / width)), MAX_TILE_WIDTH
    return height, width


def panel_size(height: int, width: int, tiles: int) -> tuple[int, int]:
    """(width, height) in pixels of a panel of `tiles` tiles of an H × W image."""
    th, tw = tile_size(height, width)
    return tiles * tw + (tiles - 1) * GAP, th + TITLE_HEIGHT


def _resized(tile: Tile, size: tuple[int, int]):
    from PIL import Image

    picture = Image.fromarray(tile.pixels)
    if picture.size == (size[1], size[0]):
        return picture
    resample = Image.Resampling.NEAREST if tile.labels else Image.Resampling.BILINEAR
    return picture.resize((size[1], size[0]), resample)


def compose_panel(tiles: Sequence[Tile]):
    """The tiles side by side on a white strip with a caption above each; returns a PIL image."""
    from PIL import Image, ImageDraw

    height, width = tiles[0].pixels.shape[:2]
    th, tw = tile_size(height, width)
    canvas = Image.new("RGB", panel_size(height, width, len(tiles)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        left = i * (tw + GAP)
        canvas.paste(_resized(tile, (th, tw)), (left, TITLE_HEIGHT))
        draw.text((left + 2, 1), tile.title, fill=(0, 0, 0))
    return canvas


def tile_boxes(height: int, width: int, tiles: int) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of each tile's picture inside a panel (for tests and crops)."""
    th, tw = tile_size(height, width)
    return [(i * (tw + GAP), TITLE_HEIGHT, i * (tw + GAP) + tw, TITLE_HEIGHT + th) for i in range(tiles)]


def contact_sheet(panels: Sequence, title: str = ""):
    """Panels stacked top to bottom (GAP between them) under an optional title line."""
    from PIL import Image, ImageDraw

    top = TITLE_HEIGHT if title else 0
    width = max(p.size[0] for p in panels)
    height = top + sum(p.size[1] for p in panels) + GAP * (len(panels) - 1)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    if title:
        ImageDraw.Draw(sheet).text((2, 1), title, fill=(0, 0, 0))
    y = top
    for p in panels:
        sheet.paste(p, (0, y))
        y += p.size[1] + GAP
    return sheet


def save_png(picture, path: str | Path) -> Path:
    """Write a PIL image (or an H × W × 3 uint8 array) as PNG atomically."""
    from PIL import Image

    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    with atomic_output(path, "wb") as fh:
        picture.save(fh, format="PNG")
    return Path(path)
