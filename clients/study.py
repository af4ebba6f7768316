"""A chosen series -> the chat messages that show it (pure): the slice budget, the sample,
the windowed pixels, the allowed tags, and what was sent.

The series (clients.series: grouped, chosen, ordered) is sampled evenly to a slice budget,
windowed (clients.windows), and laid out as Google's MedGemma 1.5 CT notebook prompts it:
each image followed by the text "SLICE n", n counted from 1 within the slices sent, then
the caller's question (clients.messages.slices_turn). A radiograph or one-image series is
sent as is. Only pixels and the caller's text reach the prompt; `tags=` adds chosen
non-identifying attributes (ALLOWED_TAGS) as one line, and anything else is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydicom.datadict import dictionary_description, keyword_dict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from clients.errors import StudyError
from clients.images import DEFAULT_MAX_SIZE
from clients.messages import Message, slices_turn
from clients.series import Series, choose_series, group_series, order_slices
from clients.windows import check_window, default_window, window_frame

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

    @property
    def sent(self) -> int:
        return len(self.indices)

    def line(self) -> str:
        shown = ", ".join(str(i) for i in self.indices[:12]) + (", ..." if self.sent > 12 else "")
        tags = f", tags {', '.join(self.tags)}" if self.tags else ""
        return (
            f"series {self.series_uid} ({self.modality}): {self.sent} of {self.total} image(s) "
            f"sent (positions {shown}), window {self.window}{tags}"
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


def slice_budget(n: int, *, image_limit: int | None = None, max_slices: int | None = None) -> int:
    """How many of n images to send: max_slices when given (at most the server's image limit),
    else all of them. StudyError when n is above the limit and no max_slices was chosen."""
    if max_slices is not None:
        if max_slices < 1:
            raise StudyError(f"--max-slices must be at least 1, not {max_slices}")
        if image_limit is not None and max_slices > image_limit:
            raise StudyError(
                f"--max-slices {max_slices} is above the server's limit of {image_limit} "
                f"images per prompt; use --max-slices {image_limit} or fewer"
            )
        return min(max_slices, n)
    if image_limit is not None and n > image_limit:
        raise StudyError(
            f"the series has {n} images, above the server's limit of {image_limit} images per "
            f"prompt; send an even sample with --max-slices N (N <= {image_limit})"
        )
    return n


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
    system: str | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
) -> tuple[list[Message], Sent]:
    """[system], user(images with "SLICE n" after each, then the question), and what was sent,
    for the study's series `series_uid` (default: its only image series; clients.series).

    budget: at most this many images, sampled evenly (None: all; see slice_budget).
    window: one of clients.windows.WINDOWS; None: "rgb" for CT, "voi" otherwise.
    tags: ALLOWED_TAGS only. Raises StudyError (an ImageError) for a study that cannot be
    shown, ImageError for pixel data that cannot be decoded.
    """
    tags = check_tags(tags)
    series = choose_series(group_series(datasets), series_uid)
    return series_messages(
        series, question, budget=budget, window=window, tags=tags, system=system, max_size=max_size
    )


def series_messages(
    series: Series,
    question: str,
    *,
    budget: int | None = None,
    window: str | None = None,
    tags: Sequence[str] = (),
    system: str | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
) -> tuple[list[Message], Sent]:
    """build_study_messages for a series already chosen (clients.series.choose_series)."""
    tags = check_tags(tags)
    window = check_window(window or default_window(series.modality), series.modality)
    ordered = order_slices(series)
    indices = sample_indices(len(ordered), budget if budget is not None else len(ordered))
    header, present = tag_line(ordered[0].attrs, tags)
    pixels = []
    for index in indices:
        slice_ = ordered[index]
        where = f"series {series.name()} {slice_.label()}"
        pixels.append(window_frame(slice_.source, slice_.frame, slice_.attrs, window, where))
    turn = slices_turn(
        pixels, question, header=header, labelled=not series.is_projection(), max_size=max_size
    )
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append(turn)
    sent = Sent(series.uid, series.modality, len(ordered), tuple(indices), window, present)
    return messages, sent
