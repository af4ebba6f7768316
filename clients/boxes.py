"""Anatomical localization on a chest X-ray, as Google prompts MedGemma 1.5 for it (pure):
the image padded to a square, the instruction, the answer's boxes parsed and mapped back
to the original image's pixels, and drawn.

The recipe is Google-Health/medgemma's notebooks/cxr_anatomy_localization_with_hugging_face.ipynb:

- the image padded with zeros to a centred square (its `pad_image_to_square`: the short
  side gets `d // 2` before and `d - d // 2` after, d the difference of the sides);
- one user turn, the image then the notebook's instruction (LOCALIZE_PROMPT, verbatim,
  with the object's name), no system prompt, greedy, 1000 new tokens;
- the answer: the model may think first, between `<unused94>` and `<unused95>`; what
  follows `<unused95>` holds "Final Answer: ```json[{"box_2d": [y0, x0, y1, x1],
  "label": ...}]```", coordinates normalized to 0..1000 of the padded square (the
  notebook's printed answer: `Final Answer: ```json[{"box_2d": [140, 110, 340, 470],
  "label": "right clavicle"}]````). The notebook takes the text between the first
  "```json" and the last "```" and json.loads it.

Deviations: the notebook draws the boxes on the padded square; we map them back through
the padding to the original image (x = v / 1000 * side - left, y likewise), which is what
a report's coordinates must be in. Where the answer has no "```json" fence, the JSON list
after "Final Answer:" is read too (the instruction asks for both). Each box is checked: four
numbers in 0..1000 with y0 < y1 and x0 < x1, overlapping the image; a box reaching into the
padding is clipped to the image; a box wholly in the padding, or any malformed box, makes the
whole answer unusable (BoxError, holding the raw answer): nothing half-parsed is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np
from PIL import Image, ImageDraw

NORMALIZED = 1000  # box_2d is normalized to 0..1000 of the (padded) image
THINKING_END = "<unused95>"  # the notebook: the thinking trace ends at this token
FENCE, FENCE_END = "```json", "```"
FINAL = "Final Answer:"
MAX_NEW_TOKENS = 1000  # the notebook's max_new_tokens
LOCALIZE_PROMPT = (  # the notebook's `prompt`, verbatim ({{ }} are its literal braces)
    "Instructions:\n"
    "The following user query will require outputting bounding boxes. The format of "
    "bounding boxes coordinates is [y0, x0, y1, x1] where (y0, x0) must be top-left corner "
    "and (y1, x1) the bottom-right corner. This implies that x0 < x1 and y0 < y1. Always "
    "normalize the x and y coordinates the range [0, 1000], meaning that a bounding box "
    "starting at 15% of the image width would be associated with an x coordinate of 150. "
    "You MUST output a single parseable json list of objects enclosed into ```json...``` "
    'brackets, for instance ```json[{{"box_2d": [800, 3, 840, 471], "label": "car"}}, '
    '{{"box_2d": [400, 22, 600, 73], "label": "dog"}}]``` is a valid output. Now answer to '
    "the user query.\n\n"
    'Remember "left" refers to the patient\'s left side where the heart is and sometimes '
    "underneath an L in the upper right corner of the image.\n\n"
    "Query:\n"
    "Where is the {object_name}? Don't give a final answer without reasoning. Output the "
    'final answer in the format "Final Answer: X" where X is a JSON list of objects. The '
    'object needs a "box_2d" and "label" key. Answer:'
)


class BoxError(ValueError):
    """An answer without usable boxes; `raw` holds the model's whole answer."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


def localize_prompt(object_name: str) -> str:
    """The notebook's instruction asking where `object_name` is."""
    name = " ".join(object_name.split())
    if not name:
        raise ValueError('--object needs the name of what to find (e.g. "right clavicle")')
    return LOCALIZE_PROMPT.format(object_name=name)


@dataclass(frozen=True)
class Padding:
    """How an image of width x height sits in the centred square of `side` pixels."""

    width: int
    height: int
    left: int
    top: int

    @property
    def side(self) -> int:
        return max(self.width, self.height)


def padding_of(width: int, height: int) -> Padding:
    """The notebook's padding: the short side gets d // 2 before, d - d // 2 after."""
    d = abs(width - height)
    return Padding(width, height, d // 2 if height > width else 0, d // 2 if width > height else 0)


def pad_to_square(pixels: np.ndarray) -> tuple[np.ndarray, Padding]:
    """The image (H x W or H x W x C, uint8) padded with zeros to a centred square."""
    a = np.asarray(pixels)
    pad = padding_of(a.shape[1], a.shape[0])
    rows = (pad.top, pad.side - a.shape[0] - pad.top)
    cols = (pad.left, pad.side - a.shape[1] - pad.left)
    widths = (rows, cols) + ((0, 0),) * (a.ndim - 2)
    return np.pad(a, widths), pad


@dataclass(frozen=True)
class Box:
    """One box the model gave: its label, its box_2d as given, and where it lies in the
    original image's pixels (x right, y down, (0, 0) the top-left pixel's outer corner)."""

    label: str
    box_2d: tuple[float, float, float, float]  # y0, x0, y1, x1 in 0..1000 of the square
    x0: float
    y0: float
    x1: float
    y1: float
    clipped: bool = False  # True when it reached into the padding and was cut to the image

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "x0": round(self.x0, 1),
            "y0": round(self.y0, 1),
            "x1": round(self.x1, 1),
            "y1": round(self.y1, 1),
            "box_2d": list(self.box_2d),
            "clipped": self.clipped,
        }

    def corners(self) -> list[tuple[float, float]]:
        """The outline as a closed polyline of (column, row) points, as SR SCOORD wants."""
        return [
            (self.x0, self.y0),
            (self.x1, self.y0),
            (self.x1, self.y1),
            (self.x0, self.y1),
            (self.x0, self.y0),
        ]


def after_thinking(text: str) -> str:
    """The answer after the thinking trace, as the notebook cuts it (after <unused95>)."""
    return text.split(THINKING_END, 1)[1].lstrip() if THINKING_END in text else text


def box_json(answer: str) -> str | None:
    """The notebook's cut: between the first ```json and the last ``` after it; else the
    JSON list after "Final Answer:"; None when there is neither."""
    start = answer.find(FENCE)
    end = answer.rfind(FENCE_END)
    if start != -1 and end > start:
        return answer[start + len(FENCE) : end].strip()
    final = answer.rfind(FINAL)
    if final != -1:
        rest = answer[final + len(FINAL) :]
        first, last = rest.find("["), rest.rfind("]")
        if first != -1 and last > first:
            return rest[first : last + 1]
    return None


def raw_boxes(text: str) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(label, box_2d) of each object in the answer. Raises BoxError."""
    found = box_json(after_thinking(text))
    if found is None:
        raise BoxError(
            'no parseable boxes: the answer has no ```json list or "Final Answer:"', text
        )
    try:
        items = json.loads(found)
    except json.JSONDecodeError as exc:
        why = f"no parseable boxes: the answer's JSON does not parse ({exc.msg})"
        raise BoxError(why, text) from None
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise BoxError("no parseable boxes: the answer's JSON is not a list of objects", text)
    out = []
    for n, item in enumerate(items, 1):
        box = item.get("box_2d") if isinstance(item, dict) else None
        if not is_box(box):
            raise BoxError(f"no parseable boxes: object {n} has no box_2d of four numbers", text)
        y0, x0, y1, x1 = (float(v) for v in box)
        label = item.get("label")
        out.append((str(label) if label is not None else "", (y0, x0, y1, x1)))
    return out


def is_box(value: object) -> TypeGuard[list[float]]:
    """Four numbers (not booleans)."""
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def to_pixels(label: str, box_2d: tuple[float, ...], pad: Padding, raw: str) -> Box:
    """The box in the original image's pixels, through the padding. Raises BoxError for a
    box outside 0..1000, not ordered, or wholly outside the image."""
    y0, x0, y1, x1 = box_2d
    if not all(0 <= v <= NORMALIZED for v in box_2d):
        raise BoxError(f"box {label!r} {list(box_2d)} is outside the image (0..1000)", raw)
    if not (y0 < y1 and x0 < x1):
        raise BoxError(
            f"box {label!r} {list(box_2d)} is not [y0, x0, y1, x1] with y0 < y1, x0 < x1", raw
        )
    scale = pad.side / NORMALIZED
    px = (x0 * scale - pad.left, y0 * scale - pad.top, x1 * scale - pad.left, y1 * scale - pad.top)
    cx0, cy0 = max(px[0], 0.0), max(px[1], 0.0)
    cx1, cy1 = min(px[2], float(pad.width)), min(px[3], float(pad.height))
    if not (cx0 < cx1 and cy0 < cy1):
        raise BoxError(
            f"box {label!r} {list(box_2d)} is outside the image: it lies in the padding", raw
        )
    clipped = (cx0, cy0, cx1, cy1) != px
    return Box(label, (y0, x0, y1, x1), cx0, cy0, cx1, cy1, clipped)


def parse_boxes(text: str, pad: Padding) -> list[Box]:
    """Every box of the model's answer in the original image's pixels. Raises BoxError
    (with the raw answer) when there is none, or when one is malformed or outside."""
    return [to_pixels(label, box, pad, text) for label, box in raw_boxes(text)]


def overlay(pixels: np.ndarray, boxes: list[Box]) -> Image.Image:
    """The original image (8-bit grey or RGB) with each box drawn in red and labelled, as
    the notebook draws them (there on the padded square, here on the original)."""
    a = np.asarray(pixels)
    image = Image.fromarray(a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1), "RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 256))
    for box in boxes:
        draw.rectangle([(box.x0, box.y0), (box.x1, box.y1)], outline="red", width=width)
        if box.label:
            draw.text((box.x0, max(0.0, box.y0 - 15)), box.label, fill="red")
    return image
