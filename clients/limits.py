"""The server's limits, learned from the server, and a recipe fitted to them (pure).

The guard (serve.guard.model_limits) adds `max_images_per_prompt` to each entry of
GET /v1/models; vLLM's model card already carries `max_model_len`. A server that publishes
no image limit (a plain vLLM) leaves the client's own setting (`--image-limit` /
MEDGEMMA_IMAGE_LIMIT) to stand in, and, without one, the recipe is sent as it is.

`fit_slices` takes the recipe's number of images down to what the prompt can hold:
images per prompt, then the context: each image is 256 tokens (MedGemma's SigLIP at
896 px; `IMAGE_TOKENS`) plus its markers and "SLICE n", beside the prompt's text and the
answer's max_tokens, within max_model_len. When not even one image fits, nothing is sent:
one line names the limit and the config field to raise (LimitError).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clients.errors import StudyError

IMAGES_FIELD = "max_images_per_prompt"  # the guard's field on /v1/models
CONTEXT_FIELD = "max_model_len"  # vLLM's own field on /v1/models
IMAGE_TOKENS = 256  # MedGemma's tokens per image (SigLIP 896 px, 4x4 pooled)
# Gemma 3's chat template wraps each image in "\n\n<start_of_image>" ... "<end_of_image>\n\n";
# "SLICE n" and its part boundary are a few more. Measured on the stand-in's tokenizer
# (tests/e2e/test_dicomweb_live.py, 2026-12-06): one more image plus two labels cost 19
# tokens beyond the 256; 12 per slice covers that.
SLICE_OVERHEAD_TOKENS = 12
TEMPLATE_TOKENS = 16  # <bos>, turn markers, roles
BYTES_PER_TOKEN = 3  # a conservative text estimate (Gemma's tokenizer: ~4 chars a token)
COVERAGE_MM = 10.0  # a volume fitted coarser than one slice per 10 mm is said to be so

SERVER = "server"
CLIENT = "client"
UNKNOWN = "unknown"


class LimitError(StudyError):
    """Not even one image fits the server's limits: nothing is sent."""


@dataclass(frozen=True)
class Limits:
    """What one prompt may hold, and where that was learned."""

    images_per_prompt: int | None = None
    max_model_len: int | None = None
    source: str = UNKNOWN  # SERVER (published), CLIENT (--image-limit), UNKNOWN

    def note(self) -> str | None:
        """One line to say how the limits were learned, when not from the server."""
        if self.source == CLIENT:
            return (
                f"the server publishes no image limit: using --image-limit / "
                f"MEDGEMMA_IMAGE_LIMIT, {self.images_per_prompt} images per prompt"
            )
        if self.source == UNKNOWN:
            return (
                "the server publishes no image limit and none is set (--image-limit / "
                "MEDGEMMA_IMAGE_LIMIT): images per prompt unknown, the server may refuse"
            )
        return None


def int_field(entry: Mapping[str, Any], name: str) -> int | None:
    value = entry.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def limits_from_models(
    entries: Iterable[Mapping[str, Any]], model: str, image_limit: int | None = None
) -> Limits:
    """The limits of `model` from the /v1/models entries (an adapter's missing ones from
    its parent); `image_limit` (the client's setting) when the server publishes none."""
    by_id = {str(e.get("id")): e for e in entries}
    entry = by_id.get(model, {})
    parent = by_id.get(str(entry.get("parent")), {}) if entry.get("parent") else {}
    images = int_field(entry, IMAGES_FIELD) or int_field(parent, IMAGES_FIELD)
    context = int_field(entry, CONTEXT_FIELD) or int_field(parent, CONTEXT_FIELD)
    if entry.get(IMAGES_FIELD) == 0:
        images = 0  # a text-only deployment publishes 0
    if images is not None:
        return Limits(images, context, SERVER)
    if image_limit is not None:
        return Limits(image_limit, context, CLIENT)
    return Limits(None, context, UNKNOWN)


def text_tokens(texts: Iterable[str]) -> int:
    """A generous estimate of the tokens of a prompt's text parts and its template."""
    return TEMPLATE_TOKENS + sum(math.ceil(len(t.encode()) / BYTES_PER_TOKEN) + 1 for t in texts)


@dataclass(frozen=True)
class Fit:
    """How many images to send, and why fewer than wanted (empty: as wanted)."""

    count: int
    reason: str = ""


def fit_slices(wanted: int, limits: Limits, *, text: int, max_tokens: int) -> Fit:
    """At most `wanted` images within the limits. `text`: the prompt's text tokens
    (text_tokens); `max_tokens`: the answer's budget. LimitError when none fits."""
    count, reason = wanted, ""
    ipp = limits.images_per_prompt
    if ipp is not None and count > ipp:
        count = ipp
        reason = (
            f"the server takes at most {ipp} images per prompt"
            if limits.source == SERVER
            else f"--image-limit / MEDGEMMA_IMAGE_LIMIT is {ipp}"
        )
    per_image = IMAGE_TOKENS + SLICE_OVERHEAD_TOKENS
    if limits.max_model_len is not None:
        room = limits.max_model_len - text - max_tokens
        by_context = max(0, room // per_image)
        if count > by_context:
            count = by_context
            reason = (
                f"the server's context of {limits.max_model_len} tokens (max_model_len) holds "
                f"{by_context} images of {IMAGE_TOKENS} tokens beside about {text} tokens of "
                f"text and max_tokens {max_tokens}"
            )
    if count >= 1 or wanted == 0:
        return Fit(count, reason)
    if ipp == 0:
        raise LimitError(
            "the server takes no images (limit_mm_per_prompt image: 0): nothing sent; "
            "serve a config that takes images"
        )
    raise LimitError(
        f"not one image fits the server's context: max_model_len {limits.max_model_len} "
        f"tokens < about {text} of text + {per_image} for one image + max_tokens "
        f"{max_tokens}; nothing sent: lower --max-tokens or raise max_model_len in the "
        f"server's config"
    )


def coverage_note(sent: int, extent_mm: float | None) -> str:
    """', one slice per 74 mm' when a volume's sample is coarser than one per 10 mm."""
    if extent_mm is None or sent < 1 or extent_mm <= 0:
        return ""
    per = extent_mm / max(sent - 1, 1) if sent > 1 else extent_mm
    if per <= COVERAGE_MM:
        return ""
    needed = math.ceil(extent_mm / COVERAGE_MM) + 1
    return (
        f" (one slice per {per:.0f} mm of {extent_mm:.0f} mm; one per {COVERAGE_MM:.0f} mm "
        f"takes {needed}: raise limit_mm_per_prompt image / max_model_len)"
    )
