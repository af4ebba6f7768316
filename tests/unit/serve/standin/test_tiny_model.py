"""The random-weight stand-in: MedGemma 4B's geometry, Gemma 3 tokens, published layout."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from serve.standin import tiny_model


def tensors(folder: Path) -> dict:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_geometry_and_notice(tiny_model_dir: Path) -> None:
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Gemma3ForConditionalGeneration"]
    v = cfg["vision_config"]
    assert (v["image_size"], v["patch_size"], cfg["mm_tokens_per_image"]) == (896, 14, 256)
    assert "RANDOM WEIGHTS" in cfg["_medgemma_serve_notice"]
    assert "meaningless" in (tiny_model_dir / "README.md").read_text()
    types = cfg["text_config"]["layer_types"]
    assert types.count("full_attention") >= 1 and types.count("sliding_attention") >= 1, types


def test_published_key_layout_in_bf16(tiny_model_dir: Path) -> None:
    t = tensors(tiny_model_dir)
    assert any(k.startswith("vision_tower.vision_model.encoder.") for k in t)
    assert any(k.startswith("language_model.model.layers.") for k in t)
    assert "multi_modal_projector.mm_input_projection_weight" in t
    assert not [k for k in t if ".head." in k or k.startswith("model.")]
    assert {str(x.dtype) for x in t.values()} == {"torch.bfloat16"}


def test_tokenizer_has_gemma_specials_newlines_and_template(tiny_model_dir: Path) -> None:
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    tok = proc.tokenizer
    vocab = tok.get_vocab()
    for t in [*tiny_model.SPECIAL_TOKENS, *tiny_model.NEWLINE_TOKENS]:
        assert t in vocab, t
    text = proc.apply_chat_template(
        [
            {
                "role": "system",
                "content": [{"type": "text", "text": "You are an expert radiologist."}],
            },
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "Describe this X-ray"}],
            },
        ],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == (
        "<bos><start_of_turn>user\nYou are an expert radiologist.\n\n<start_of_image>"
        "Describe this X-ray<end_of_turn>\n<start_of_turn>model\n"
    ), text


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = tiny_model.build(tmp_path / "again", "tiny", seed=0)
    other = tiny_model.build(tmp_path / "other", "tiny", seed=1)
    a, b, c = tensors(tiny_model_dir), tensors(again), tensors(other)
    assert a.keys() == b.keys() == c.keys()
    assert all(a[k].equal(b[k]) for k in a)
    assert not all(a[k].equal(c[k]) for k in a)


def test_bench_preset_has_at_least_20m_parameters(tmp_path: Path) -> None:
    folder = tiny_model.build(tmp_path / "bench", "bench", seed=0)
    n = sum(t.numel() for t in tensors(folder).values())
    assert n >= 20_000_000, n
    assert f"{n:,}" in (folder / "README.md").read_text()


def test_tiny_preset_is_small(tiny_model_dir: Path) -> None:
    n = sum(t.numel() for t in tensors(tiny_model_dir).values())
    assert n < 2_000_000, n


def test_cli_refuses_unwritable_target(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert tiny_model.main([str(blocker / "model")]) == 1


def test_volumes_preset_has_one_five_context_and_window(tmp_path: Path) -> None:
    """The CPU twin of MedGemma 1.5 for volumes: tiny widths, a 131,072-token context that
    an 85-slice volume (~22.9 K tokens) fits, Gemma 3's 1,024-token window on 5 of 6 layers,
    and a tokenizer that does not call a 22 K-token prompt too long."""
    folder = tiny_model.build(tmp_path / "volumes", "volumes", seed=0)
    text = json.loads((folder / "config.json").read_text())["text_config"]
    assert (text["max_position_embeddings"], text["sliding_window"]) == (131072, 1024), text
    types = text["layer_types"]
    assert (types.count("full_attention"), types.count("sliding_attention")) == (1, 5), types
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok["model_max_length"] == 131072, tok
    n = sum(t.numel() for t in tensors(folder).values())
    assert n < 2_000_000, n
