"""The fixed prompts `verify` sends: OpenAI chat messages, text only, one image, two images
and a multi-turn follow-up about an image.

The images are pydicom's own test files (a CT slice and an MR slice, shipped in the pydicom
wheel), decoded to PNG by `clients.images`: pixels only, no DICOM header reaches a prompt.
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


def fixed_prompts() -> list[Prompt]:
    """The four prompts, in the order they are checked and printed."""
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
    ]
