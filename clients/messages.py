"""Chat messages in the OpenAI format, the way MedGemma is prompted (pure).

MedGemma's examples put the role in a system message ("You are an expert radiologist."),
then a user turn whose content is the text followed by the image(s). Gemma 3's chat
template prepends the system text to the first user turn; vLLM applies it on the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clients.errors import ImageError
from clients.image_input import ImageSource, to_image_part
from clients.images import DEFAULT_MAX_SIZE

Message = dict[str, Any]

RADIOLOGIST = "You are an expert radiologist."
ROLES = ("system", "user", "assistant")


def image_part(
    image: ImageSource | dict[str, Any], *, max_size: int | None, frame: int | None
) -> dict[str, Any]:
    """An image_url part; a part that is already one (a dict) is kept as is."""
    if isinstance(image, dict):
        if image.get("type") != "image_url" or "url" not in image.get("image_url", {}):
            raise ImageError(f"not an image_url content part: keys {sorted(image)}")
        return image
    return to_image_part(image, max_size=max_size, frame=frame)


def user_turn(
    text: str,
    images: Sequence[ImageSource | dict[str, Any]] = (),
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    frame: int | None = None,
) -> Message:
    """A user message: a text part, then one image_url part per image."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [image_part(img, max_size=max_size, frame=frame) for img in images]
    return {"role": "user", "content": parts}


def slices_turn(
    images: Sequence[ImageSource | dict[str, Any]],
    question: str,
    *,
    instruction: str | None = None,
    header: str = "",
    labelled: bool = True,
    max_size: int | None = DEFAULT_MAX_SIZE,
) -> Message:
    """A user message showing a series as Google's MedGemma 1.5 CT notebook prompts it: the
    instruction and the header line (when given), each image followed by "SLICE n" (n from
    1; when labelled and there are several), then the question."""
    parts: list[dict[str, Any]] = []
    parts += [{"type": "text", "text": t} for t in (instruction, header) if t]
    labelled = labelled and len(images) > 1
    for n, image in enumerate(images, 1):
        parts.append(image_part(image, max_size=max_size, frame=None))
        if labelled:
            parts.append({"type": "text", "text": f"SLICE {n}"})
    parts.append({"type": "text", "text": question})
    return {"role": "user", "content": parts}


def assistant_turn(text: str) -> Message:
    """A previous answer of the model, for multi-turn conversations."""
    return {"role": "assistant", "content": text}


def check_history(history: Sequence[Message]) -> list[Message]:
    """The history turns as a list, each with a known role and content (ValueError if not)."""
    turns = []
    for i, turn in enumerate(history):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or "content" not in turn:
            raise ValueError(
                f"history[{i}] is not a chat message with role in {ROLES} and content: {turn!r:.80}"
            )
        turns.append(turn)
    return turns


def build_messages(
    text: str,
    images: Sequence[ImageSource | dict[str, Any]] = (),
    *,
    system: str | None = None,
    history: Sequence[Message] = (),
    max_size: int | None = DEFAULT_MAX_SIZE,
    frame: int | None = None,
) -> list[Message]:
    """[system], *history, user(text + images): the `messages` of a chat completion.

    images: paths, URLs, bytes, PIL images, numpy arrays, pydicom Datasets or ready
    image_url parts; each is downscaled to max_size (None: full resolution).
    """
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        images = [images]  # type: ignore[list-item]  # one image given bare
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages += check_history(history)
    messages.append(user_turn(text, images, max_size=max_size, frame=frame))
    return messages


def count_images(messages: Sequence[Message]) -> int:
    """How many image parts the messages carry (the server limits this per prompt)."""
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )
