"""The `verify` stand-in preset: decisive logits and an image that reaches the text
(transformers' own reference on it, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from clients.messages import RADIOLOGIST, build_messages
from serve.standin import tiny_model
from serve.verify import reference
from serve.verify.prompts import CT_FILE, MR_FILE, image_part

PROJECTION = "multi_modal_projector.mm_input_projection_weight"
FINAL_NORM = "language_model.model.norm.weight"


def weights(folder: Path, *keys: str) -> list[torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return [f.get_tensor(k).float() for k in keys]


@pytest.fixture(scope="module")
def verify_dir() -> Path:
    return tiny_model.ensure("verify", 0)


def test_tiny_keeps_transformers_init_and_verify_rescales(
    tiny_model_dir: Path, verify_dir: Path
) -> None:
    proj, norm = weights(tiny_model_dir, PROJECTION, FINAL_NORM)
    assert not proj.any() and not norm.any()  # tiny: zero projection, the image is ignored
    proj, norm = weights(verify_dir, PROJECTION, FINAL_NORM)
    assert torch.all(norm == 63.0), norm  # (1 + 63): logits 64x wider
    assert 0.06 < proj.std().item() < 0.1, proj.std()


def test_greedy_steps_are_decisive_and_the_image_changes_the_answer(verify_dir: Path) -> None:
    ref = reference.load(verify_dir, "float32")
    answers = {}
    for name in (CT_FILE, MR_FILE):
        messages = build_messages("Describe this slice.", [image_part(name)], system=RADIOLOGIST)
        g = reference.generate(ref, messages, max_tokens=8, top_k=5)
        gaps = [sorted(s.values())[-1] - sorted(s.values())[-2] for s in g.logprobs]
        assert min(gaps) > 0.3, gaps  # no near-ties that rounding could flip
        answers[name] = g.token_ids
    assert answers[CT_FILE] != answers[MR_FILE], answers
