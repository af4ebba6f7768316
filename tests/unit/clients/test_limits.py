"""clients.limits: the limits read from /v1/models entries (the guard's field, vLLM's
max_model_len, an adapter's from its base, the client's fallback) and a recipe fitted to
them, or refused when not one image fits."""

from __future__ import annotations

import pytest

from clients.limits import (
    CLIENT,
    IMAGE_TOKENS,
    SERVER,
    SLICE_OVERHEAD_TOKENS,
    UNKNOWN,
    LimitError,
    Limits,
    coverage_note,
    fit_slices,
    limits_from_models,
    text_tokens,
)

ENTRIES = [
    {"id": "base", "max_model_len": 4096, "max_images_per_prompt": 2},
    {"id": "adapter", "parent": "base", "max_model_len": None},
    {"id": "plain", "max_model_len": 8192},
]


def test_limits_come_from_the_models_entry_or_its_base_or_the_client():
    assert limits_from_models(ENTRIES, "base") == Limits(2, 4096, SERVER)
    assert limits_from_models(ENTRIES, "adapter") == Limits(2, 4096, SERVER)
    assert limits_from_models(ENTRIES, "base", image_limit=64) == Limits(2, 4096, SERVER)
    assert limits_from_models(ENTRIES, "plain", image_limit=16) == Limits(16, 8192, CLIENT)
    plain = limits_from_models(ENTRIES, "plain")
    assert plain == Limits(None, 8192, UNKNOWN) and "unknown" in (plain.note() or "")
    assert Limits(2, 4096, SERVER).note() is None
    assert "--image-limit" in (limits_from_models(ENTRIES, "plain", 3).note() or "")


def test_the_recipe_fits_the_image_limit_then_the_context():
    server = Limits(2, None, SERVER)
    assert fit_slices(85, server, text=50, max_tokens=300).count == 2
    assert "at most 2 images per prompt" in fit_slices(85, server, text=50, max_tokens=300).reason
    assert fit_slices(1, server, text=50, max_tokens=300).reason == ""
    fit = fit_slices(85, Limits(128, 4096, SERVER), text=100, max_tokens=300)
    assert fit.count == (4096 - 100 - 300) // (IMAGE_TOKENS + SLICE_OVERHEAD_TOKENS) == 13, fit
    assert "context of 4096 tokens (max_model_len)" in fit.reason
    assert fit_slices(85, Limits(128, 40960, SERVER), text=100, max_tokens=300).count == 85
    assert fit_slices(85, Limits(), text=100, max_tokens=300) == fit_slices(
        85, Limits(None, None, UNKNOWN), text=0, max_tokens=0
    )


def test_not_one_image_is_refused_naming_the_config_field():
    with pytest.raises(LimitError, match=r"limit_mm_per_prompt image: 0"):
        fit_slices(85, Limits(0, 4096, SERVER), text=10, max_tokens=10)
    with pytest.raises(LimitError, match=r"max_model_len 400 .*raise max_model_len"):
        fit_slices(85, Limits(2, 400, SERVER), text=10, max_tokens=300)


def test_text_estimate_and_coverage():
    assert text_tokens(["abc" * 10]) > 10
    assert coverage_note(85, 300.0) == ""
    note = coverage_note(2, 147.5)
    assert "one slice per 148 mm" in note and "takes 16" in note, note
