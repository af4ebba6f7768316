"""A chosen series -> the chat messages that show it (pure): the recipe, the slices fitted
to the server's limits, the pixels, the allowed tags, and what was sent.

The series (clients.series: grouped, chosen, ordered) is shown by the recipe for its kind
(clients.recipes: CT volume, MR volume, radiograph, series), fitted to the server's limits
(clients.limits: images per prompt, context) and to `--max-slices`, and laid out as
Google's MedGemma 1.5 CT notebook prompts a volume: the instruction, each image followed by
the text "SLICE n", n counted from 1 within the slices sent, then the caller's question
(clients.messages.slices_turn). Only pixels and the caller's text reach the prompt; `tags=`
adds chosen non-identifying attributes (ALLOWED_TAGS) as one line, and anything else is
refused. The same series and options give the same bytes, data URLs included, so vLLM's
prefix cache (which hashes image content) serves a follow-up question's prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_description, keyword_dict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from clients.errors import StudyError
from clients.images import DEFAULT_MAX_SIZE, data_url, encode_jpeg
from clients.limits import Limits, coverage_note, fit_slices, text_tokens
from clients.messages import Message, slices_turn
from clients.recipes import Recipe, choose_recipe, recipe_indices
from clients.series import Series, Slice, choose_series, extent_mm, group_series, order_slices
from clients.windows import VOLUME, check_window, modality_values, volume_scale, window_frame

RECIPE: Any = object()  # "the recipe's own" for system= and instruction=

ALLOWED_TAGS = (
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "Laterality",
    "ImageLaterality",
    "PatientPosition",
    "KVP",
    "ConvolutionKernel",
)
DEFAULT_TAGS = ("Modality", "BodyPartExamined", "ViewPosition", "SliceThickness")


@dataclass(frozen=True)
class Sent:
    """What a prompt carries, for the caller to print: no patient identifiers."""

    series_uid: str
    modality: str
    total: int
    indices: tuple[int, ...]  # positions in the ordered series (0 = the lowest along the normal)
    window: str
    tags: tuple[str, ...] = ()
    recipe: str = ""  # "CT, 3 windows" (clients.recipes.Recipe.label)
    reason: str = ""  # why fewer images than the recipe's; empty: the recipe as it is
    unit: str = "slices"  # "slices" for a volume, "images" otherwise

    @property
    def sent(self) -> int:
        return len(self.indices)

    def line(self) -> str:
        """'sent 2 of 60 slices (CT, 3 windows): <why>; series UID, positions 0, 59'."""
        shown = ", ".join(str(i) for i in self.indices[:12]) + (", ..." if self.sent > 12 else "")
        tags = f", tags {', '.join(self.tags)}" if self.tags else ""
        recipe = self.recipe or f"{self.modality}, window {self.window}"
        why = f": {self.reason}" if self.reason else ""
        return (
            f"sent {self.sent} of {self.total} {self.unit} ({recipe}){why}; series "
            f"{self.series_uid}, positions {shown}{tags}"
        )


# --- sampling and budget -----------------------------------------------------------------


def sample_indices(n: int, budget: int) -> list[int]:
    """`budget` evenly spaced indices into n items, the first and the last included; all of
    them when the budget covers n; the middle one for a budget of 1."""
    if n < 0 or budget < 1:
        raise ValueError(f"sample_indices needs n >= 0 and budget >= 1, not n={n}, budget={budget}")
    if budget >= n:
        return list(range(n))
    if budget == 1:
        return [(n - 1) // 2]
    steps = budget - 1
    return [(i * (n - 1) + steps // 2) // steps for i in range(budget)]


# --- tags --------------------------------------------------------------------------------


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """The tags as given, if each is an allowed non-identifying keyword (StudyError if not)."""
    tags = tuple(tags)
    for tag in tags:
        if tag not in keyword_dict:
            raise StudyError(
                f"{tag!r} is not a DICOM keyword; allowed tags: {', '.join(ALLOWED_TAGS)}"
            )
        if tag not in ALLOWED_TAGS:
            raise StudyError(
                f"tag {tag} is not allowed in a prompt (it may identify the patient or carry "
                f"free text); allowed tags: {', '.join(ALLOWED_TAGS)}"
            )
    return tags


def tag_line(attrs: Dataset, tags: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """'Modality: CT; Slice Thickness: 2.5' for the tags the slice has, and which those were."""
    parts, present = [], []
    for tag in tags:
        value = attrs.get(tag)
        if value is None or value == "":
            continue
        shown = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
        parts.append(f"{dictionary_description(tag)}: {shown[:64]}")
        present.append(tag)
    return "; ".join(parts), tuple(present)


# --- messages ----------------------------------------------------------------------------


def build_study_messages(
    datasets: Iterable[Dataset],
    question: str,
    *,
    series_uid: str | None = None,
    budget: int | None = None,
    window: str | None = None,
    tags: Sequence[str] = (),
    system: str | None = RECIPE,
    instruction: str | None = RECIPE,
    max_size: int | None = DEFAULT_MAX_SIZE,
    limits: Limits | None = None,
    max_tokens: int = 0,
) -> tuple[list[Message], Sent]:
    """[system], user(instruction, images with "SLICE n" after each, the question), and what
    was sent, for the study's series `series_uid` (default: its only image series;
    clients.series). See series_messages for the options."""
    tags = check_tags(tags)
    series = choose_series(group_series(datasets), series_uid)
    return series_messages(
        series,
        question,
        budget=budget,
        window=window,
        tags=tags,
        system=system,
        instruction=instruction,
        max_size=max_size,
        limits=limits,
        max_tokens=max_tokens,
    )


def wanted_slices(n: int, recipe: Recipe, budget: int | None) -> tuple[int, str]:
    """How many of n images the recipe (or --max-slices) wants, and what to say of it."""
    if budget is not None:
        if budget < 1:
            raise StudyError(f"--max-slices must be at least 1, not {budget}")
        return min(budget, n), (f"--max-slices {budget}" if budget < n else "")
    if recipe.max_slices is None:
        return n, ""
    if n < recipe.max_slices:
        return n, f"the series has fewer than the recipe's {recipe.max_slices}: all sent"
    return recipe.max_slices, ""


def choose_indices(n: int, recipe: Recipe, count: int, budget: int | None) -> list[int]:
    """The notebook's own choice when the recipe's count is sent from a longer series;
    otherwise an even sample, first and last included (clients.study.sample_indices), which
    spans the whole volume however few slices fit."""
    if budget is None and recipe.max_slices is not None and count == recipe.max_slices < n:
        return recipe_indices(n, recipe.max_slices)
    return sample_indices(n, count)


def slice_pixels(series: Series, slices: Sequence[Slice], window: str) -> list[Any]:
    """The slices' 8-bit pixels through the window (VOLUME: scaled together)."""

    def where(s: Slice) -> str:
        return f"series {series.name()} {s.label()}"

    if window == VOLUME:
        return volume_scale([modality_values(s.source, s.frame, s.attrs, where(s)) for s in slices])
    return [window_frame(s.source, s.frame, s.attrs, window, where(s)) for s in slices]


def series_messages(
    series: Series,
    question: str,
    *,
    budget: int | None = None,
    window: str | None = None,
    tags: Sequence[str] = (),
    system: str | None = RECIPE,
    instruction: str | None = RECIPE,
    max_size: int | None = DEFAULT_MAX_SIZE,
    limits: Limits | None = None,
    max_tokens: int = 0,
) -> tuple[list[Message], Sent]:
    """build_study_messages for a series already chosen (clients.series.choose_series).

    budget: at most this many images (--max-slices), an even sample; None: the recipe's.
    window: one of clients.windows.WINDOWS; None: the recipe's (rgb for CT, volume for MR,
    voi otherwise). system / instruction: None for none; default the recipe's. limits and
    max_tokens: the server's limits and the answer's budget, to fit the images to
    (clients.limits.fit_slices; LimitError when not one fits). Raises StudyError (an
    ImageError) for a series that cannot be shown, ImageError for undecodable pixels.
    """
    tags = check_tags(tags)
    recipe = choose_recipe(series)
    window = check_window(window or recipe.window, series.modality)
    system = recipe.system if system is RECIPE else system
    instruction = recipe.instruction if instruction is RECIPE else instruction
    ordered = order_slices(series)
    header, present = tag_line(ordered[0].attrs, tags)
    wanted, why = wanted_slices(len(ordered), recipe, budget)
    texts = [t for t in (system, instruction, header, question) if t]
    fit = fit_slices(wanted, limits or Limits(), text=text_tokens(texts), max_tokens=max_tokens)
    indices = choose_indices(len(ordered), recipe, fit.count, budget)
    reason = fit.reason or why
    if fit.reason and recipe.volume:
        reason += coverage_note(fit.count, extent_mm(ordered))
    pixels = slice_pixels(series, [ordered[i] for i in indices], window)
    images: list[Any] = pixels
    if recipe.jpeg:
        urls = [data_url(*encode_jpeg(p, max_size=max_size)) for p in pixels]
        images = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    turn = slices_turn(
        images,
        question,
        instruction=instruction,
        header=header,
        labelled=recipe.labelled,
        max_size=max_size,
    )
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append(turn)
    sent = Sent(
        series.uid,
        series.modality,
        len(ordered),
        tuple(indices),
        window,
        present,
        recipe.label(window),
        reason.strip(),
        "slices" if recipe.volume else "images",
    )
    return messages, sent
