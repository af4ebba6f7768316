"""Flame graphs (SVG) from collapsed stacks, drawn with matplotlib.

py-spy writes either its own SVG or the raw stacks, not both from one recording; the
profile needs the raw stacks for its stage table, so the flame graph is drawn from them.
`flame_boxes` is the pure layout (one box per frame per distinct prefix, widths in
samples); `write_flame_svg` draws it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Box:
    depth: int
    start: int  # in samples, from the left
    width: int  # samples under this frame
    label: str


def flame_boxes(stacks: Mapping[tuple[str, ...], int]) -> list[Box]:
    """Boxes of a flame graph: stacks sorted so equal prefixes are adjacent, then merged."""
    boxes: list[Box] = []
    open_: list[tuple[str, int, int]] = []  # (label, start, width) per depth, being extended
    x = 0
    for stack, n in sorted(stacks.items()):
        common = 0
        while common < len(open_) and common < len(stack) and open_[common][0] == stack[common]:
            common += 1
        for depth in range(len(open_) - 1, common - 1, -1):
            label, start, width = open_.pop()
            boxes.append(Box(depth, start, width, label))
        for depth in range(common):
            label, start, width = open_[depth]
            open_[depth] = (label, start, width + n)
        for frame in stack[common:]:
            open_.append((frame, x, n))
        x += n
    for depth in range(len(open_) - 1, -1, -1):
        label, start, width = open_.pop()
        boxes.append(Box(depth, start, width, label))
    return boxes


def write_flame_svg(stacks: Mapping[tuple[str, ...], int], path: Path, title: str) -> None:
    """Draw the flame graph (root at the bottom) into an SVG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boxes = flame_boxes(stacks)
    total = sum(stacks.values()) or 1
    depth = max((b.depth for b in boxes), default=0) + 1
    fig, ax = plt.subplots(figsize=(16, max(3.0, 0.22 * depth + 1)))
    for b in boxes:
        hue = (hash(b.label.split(" (")[0]) % 1000) / 1000
        color = (0.85 + 0.15 * hue, 0.35 + 0.5 * hue, 0.2)
        ax.add_patch(plt.Rectangle((b.start, b.depth), b.width, 0.95, color=color, linewidth=0))
        if b.width / total > 0.02:
            chars = int(170 * b.width / total)
            text = b.label if len(b.label) <= chars else b.label[: max(chars - 1, 1)] + "…"
            ax.text(b.start + total * 0.002, b.depth + 0.45, text, fontsize=6, va="center")
    ax.set_xlim(0, total)
    ax.set_ylim(0, depth)
    ax.set_yticks([])
    ax.set_xlabel(f"samples ({total} in all)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)
