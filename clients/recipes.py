"""How a series is shown to MedGemma: the recipe for its kind, as Google prompts it (pure).

- **CT volume** (Google-Health/medgemma, notebooks/high_dimensional_ct_hugging_face.ipynb):
  the instances in order; above 85, the notebook's 85 (`recipe_indices`); HU through three
  windows as R, G, B (clients.windows.RGB_WINDOWS); each slice a JPEG data URL (Pillow's
  quality 75, as the notebook's); one user turn: the instruction, then each image followed
  by "SLICE n" (n from 1), then the question; greedy. The notebook sorts by InstanceNumber;
  we order by position along the slice normal (clients.series.order_slices), which is what
  InstanceNumber means for an axial series and does not trust a number a scanner may reset.
- **MR volume**: the same layout; no HU windows: one min..max over all the slices sent,
  rounded to 0..255 and copied to R, G, B, as Google's serving container scales an MR
  acquisition (`_process_buffered_mri_volume`: it buffers the instances it is given, here
  the slices sent).
- **Radiograph** (CR, DX, MG, or a one-image series): the images as they are, each through
  its own VOI window, no slice labels, after the system prompt "You are an expert
  radiologist." (MedGemma's model card).
- **Series** (any other modality with several images): as a volume, each slice through its
  own VOI window, every image sent.

The instruction is one fixed string per recipe, the same for every question on a study, so
a follow-up question shares the first one's prefix (text and image bytes alike) and rides
vLLM's prefix cache. The notebook's instruction names "the center of the abdomen", which we
do not know of an arbitrary study: ours names only the modality.
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.messages import RADIOLOGIST
from clients.series import Series
from clients.windows import VOI, VOLUME

NOTEBOOK_SLICES = 85  # the CT notebook's MAX_SLICE: 85 x 256 = 21,760 image tokens
NOTEBOOK_INSTRUCTION = (
    "You are an instructor teaching medical students. You are analyzing a contiguous block "
    "of CT slices from the center of the abdomen. Please review the slices provided below "
    "carefully."
)


def instruction(modality_slices: str) -> str:
    """The notebook's instruction without the anatomy it assumes."""
    return (
        "You are an instructor teaching medical students. You are analyzing a contiguous "
        f"block of {modality_slices}. Please review the slices provided below carefully."
    )


@dataclass(frozen=True)
class Recipe:
    """How one kind of series becomes a prompt."""

    name: str  # "CT", "MR", "radiograph", "series"
    encoding: str  # what the pixels are, for the summary line: "3 windows", ...
    window: str  # clients.windows.WINDOWS: the default for this recipe
    max_slices: int | None  # the recipe's number of images; None: every image
    instruction: str | None  # the text before the images (None: none)
    system: str | None  # the default system prompt (None: none)
    labelled: bool  # "SLICE n" after each image
    jpeg: bool  # every image as JPEG at the notebook's quality (else PNG/JPEG by content)
    volume: bool  # slices of one volume: a coverage in mm can be measured

    def label(self, window: str) -> str:
        """'CT, 3 windows'; with another window than the recipe's, that window."""
        if window == self.window:
            return f"{self.name}, {self.encoding}"
        return f"{self.name}, window {window}"


CT_VOLUME = Recipe(
    name="CT",
    encoding="3 windows",
    window="rgb",
    max_slices=NOTEBOOK_SLICES,
    instruction=instruction("CT slices"),
    system=None,
    labelled=True,
    jpeg=True,
    volume=True,
)
MR_VOLUME = Recipe(
    name="MR",
    encoding="whole-volume scaling",
    window=VOLUME,
    max_slices=NOTEBOOK_SLICES,
    instruction=instruction("MRI slices"),
    system=None,
    labelled=True,
    jpeg=True,
    volume=True,
)
RADIOGRAPH = Recipe(
    name="radiograph",
    encoding="its own window",
    window=VOI,
    max_slices=None,
    instruction=None,
    system=RADIOLOGIST,
    labelled=False,
    jpeg=False,
    volume=False,
)
SERIES = Recipe(
    name="series",
    encoding="each slice's own window",
    window=VOI,
    max_slices=None,
    instruction=None,
    system=RADIOLOGIST,
    labelled=True,
    jpeg=False,
    volume=True,
)
RECIPES = (CT_VOLUME, MR_VOLUME, RADIOGRAPH, SERIES)


def choose_recipe(series: Series) -> Recipe:
    """The recipe for a series: radiograph for CR/DX/MG or one image, CT or MR volume by
    modality, else a series of slices."""
    if series.is_projection():
        return RADIOGRAPH
    return {"CT": CT_VOLUME, "MR": MR_VOLUME}.get(series.modality, SERIES)


def recipe_indices(n: int, keep: int = NOTEBOOK_SLICES) -> list[int]:
    """Which of n ordered slices the notebook keeps: all up to `keep`, else
    `[int(round(i / keep * (n - 1))) for i in range(1, keep + 1)]` (its formula, i from 1:
    the last slice is kept, the first is not; Python's round, half to even)."""
    if n <= keep:
        return list(range(n))
    return [int(round(i / keep * (n - 1))) for i in range(1, keep + 1)]
