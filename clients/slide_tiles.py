"""A pyramid level's frames -> pixels (pure): which frames a patch needs, a frame's bytes
as a PACS sends them (as stored: JPEG, JPEG 2000 or uncompressed) decoded to RGB, and a
region of the level (a patch, or the coarsest level whole for the tissue test) put
together from its tiles; a tile with no frame (a TILED_SPARSE gap) is glass, white."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from io import BytesIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from clients.errors import StudyError
from clients.slide import PATCH, Level


def frames_for(level: Level, cells: Iterable[tuple[int, int]]) -> list[int]:
    """The frame numbers (1-based, sorted) that cover the cells' patches."""
    needed: set[int] = set()
    for r, c in cells:
        for ty in range(r * PATCH // level.tile_rows, ((r + 1) * PATCH - 1) // level.tile_rows + 1):
            for tx in range(
                c * PATCH // level.tile_columns, ((c + 1) * PATCH - 1) // level.tile_columns + 1
            ):
                frame = level.frame_at(ty, tx)
                if frame is not None:
                    needed.add(frame)
    return sorted(needed)


def all_frames(level: Level) -> list[int]:
    return list(range(1, level.frames + 1))


def decode_frame(data: bytes, level: Level) -> np.ndarray:
    """One frame's bytes, as a PACS sends them (as stored): JPEG or JPEG 2000 (decoded by
    Pillow), or uncompressed 8-bit samples. RGB, tile_rows x tile_columns x 3."""
    shape = (level.tile_rows, level.tile_columns)
    if len(data) == shape[0] * shape[1] * level.samples:
        pixels = np.frombuffer(data, np.uint8).reshape(*shape, level.samples)
    else:
        try:
            with Image.open(BytesIO(data)) as img:
                pixels = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise StudyError(
                f"a frame of the slide's level {level.sop_uid} cannot be decoded ({exc}): "
                "its transfer syntax is not JPEG, JPEG 2000 or uncompressed 8-bit"
            ) from None
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[: shape[0], : shape[1], :3])


def region(
    level: Level, frames: Mapping[int, np.ndarray], y0: int, x0: int, height: int, width: int
) -> np.ndarray:
    """The level's RGB pixels in [y0, y0 + height) x [x0, x0 + width), from its frames
    (a tile with no frame, or past the matrix, is glass: white)."""
    out = np.full((height, width, 3), 255, np.uint8)
    th, tw = level.tile_rows, level.tile_columns
    for ty in range(y0 // th, (y0 + height - 1) // th + 1):
        for tx in range(x0 // tw, (x0 + width - 1) // tw + 1):
            frame = level.frame_at(ty, tx)
            if frame is None or frame not in frames:
                continue
            tile = frames[frame]
            top, left = ty * th, tx * tw
            ys, xs = max(y0, top), max(x0, left)
            ye, xe = min(y0 + height, top + th), min(x0 + width, left + tw)
            out[ys - y0 : ye - y0, xs - x0 : xe - x0] = tile[
                ys - top : ye - top, xs - left : xe - left
            ]
    return out


def whole_level(level: Level, frames: Mapping[int, np.ndarray]) -> np.ndarray:
    """The level's whole matrix (for the coarse level the tissue test reads)."""
    return region(level, frames, 0, 0, level.rows, level.columns)


def patch_pixels(
    level: Level, frames: Mapping[int, np.ndarray], cell: tuple[int, int]
) -> np.ndarray:
    r, c = cell
    return region(level, frames, r * PATCH, c * PATCH, PATCH, PATCH)
