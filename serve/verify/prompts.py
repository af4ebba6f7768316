"""The fixed prompts `verify` sends: OpenAI chat messages, text only, one image, two images,
a multi-turn follow-up about an image and, where the server takes that many images, a few
slices of a CT volume.

The images are pydicom's own test files (a CT slice and an MR slice, shipped in the pydicom
wheel), decoded to PNG by `clients.images`, and slices of the project's synthetic CT phantom
(serve.pacs.phantom) shown by the clients' CT recipe (clients.study: HU through three
windows as R, G, B, one JPEG per slice, "SLICE n" after each): pixels only, no DICOM header
reaches a prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from clients.messages import RADIOLOGIST, assistant_turn, build_messages

Message = dict[str, Any]

# pydicom's test data: anonymous phantom slices, no patient identifiers in the pixels.
CT_FILE = "CT_small.dcm"
MR_FILE = "MR_small.dcm"
# A few CT slices in one prompt: each is an image Gemma 3 attends to both ways on its own.
VOLUME_SLICES = 4


@dataclass(frozen=True)
class Prompt:
    """One fixed prompt: its name (printed), its messages, how many images it carries."""

    name: str
    messages: list[Message]
    images: int


@cache
def image_part(filename: str) -> dict[str, Any]:
    """pydicom's test file `filename` as an image_url part (a PNG data URL)."""
    from pydicom.data import get_testdata_file

    from clients.image_input import to_image_part

    path = get_testdata_file(filename)
    if path is None:  # pragma: no cover - shipped inside the pydicom wheel
        raise FileNotFoundError(f"pydicom's test file {filename} is missing")
    return to_image_part(str(path))


@cache
def ct_volume_messages() -> list[Message]:
    """VOLUME_SLICES slices of the synthetic CT phantom by the clients' CT recipe."""
    from clients.series import group_series
    from clients.study import series_messages
    from serve.pacs.phantom import PhantomSpec, phantom_series

    series = group_series(phantom_series(PhantomSpec(slices=VOLUME_SLICES)))[0]
    messages, _sent = series_messages(series, "Which slice shows the lesion?", budget=VOLUME_SLICES)
    return messages


def fixed_prompts(image_limit: int | None = None) -> list[Prompt]:
    """The prompts, in the order they are checked and printed: four, and `ct-volume` where
    the server takes `image_limit` >= VOLUME_SLICES images per prompt."""
    ct, mr = image_part(CT_FILE), image_part(MR_FILE)
    first = build_messages("Describe this MRI slice.", [mr], system=RADIOLOGIST)
    return [
        Prompt(
            "text",
            build_messages(
                "Summarize the report: the lungs are clear, no pleural effusion, "
                "heart size is normal.",
                system=RADIOLOGIST,
            ),
            0,
        ),
        Prompt("one-image", build_messages("Describe this CT slice.", [ct], system=RADIOLOGIST), 1),
        Prompt(
            "two-images",
            build_messages("Compare these two images.", [ct, mr], system=RADIOLOGIST),
            2,
        ),
        Prompt(
            "follow-up",
            [
                *first,
                assistant_turn("The brain shows no acute infarct."),
                *build_messages("What are the key findings?"),
            ],
            1,
        ),
        *(
            [Prompt("ct-volume", ct_volume_messages(), VOLUME_SLICES)]
            if image_limit is not None and image_limit >= VOLUME_SLICES
            else []
        ),
    ]
