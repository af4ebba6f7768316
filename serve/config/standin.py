"""The stand-in model a config may serve instead of real weights, and what its preset
tells about it without building it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve.model.presets import PRESETS


class StandIn(BaseModel):
    """The random-weight MedGemma-architecture model built locally by `serve.standin.tiny_model`."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["tiny", "bench", "verify", "volumes"] = Field(
        "tiny",
        description="Size preset: `tiny` for tests, `bench` (larger) for benchmarks, `verify` "
        "(tiny's sizes, decisive next tokens, an image projection that is not zero) for "
        "`python -m serve verify`, `volumes` (tiny's widths with MedGemma 1.5's 131,072-token "
        "context and 1,024-token sliding window) for CT/MR volumes.",
    )
    seed: int = Field(0, ge=0, description="Random seed: the same seed builds the same weights.")


def standin_model_config(stand_in: StandIn) -> dict[str, Any]:
    """What the stand-in's config.json holds that the pitfall checks read (pure: from its
    preset, nothing is built)."""
    limit = PRESETS[stand_in.preset].max_position_embeddings
    return {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {"max_position_embeddings": limit},
    }
