"""Known Gemma 3 pitfalls refused at config time (serve.model.gemma3.gemma3_pitfall):
fp16, max_model_len above the model's context, image processor options Gemma 3 lacks. A
local model folder's config.json is read by the launch pre-flight."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serve.config.deployment import ConfigError, load_config
from serve.launch.preflight import preflight
from serve.model.gemma3 import context_length, gemma3_pitfall, is_gemma3
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "deployments"
GEMMA3 = {"model_type": "gemma3", "text_config": {"max_position_embeddings": 131072}}


def model_folder(tmp_path: Path, config: dict[str, object]) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "config",
    [
        "cpu-tiny.yaml",
        "medgemma-4b-it.yaml",
        "medgemma-27b-it-tp4.yaml",
        "medgemma-27b-text-it-tp2.yaml",
    ],
)
def test_fp16_is_refused_for_every_gemma3_config_with_the_reason(config: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / config, ["dtype=float16"])
    msg = str(err.value)
    assert "float16" in msg and "overflow" in msg and "use dtype: bfloat16" in msg.lower(), msg


def test_fp16_cannot_come_in_through_extra_args() -> None:
    for key in ("dtype", "max_model_len", "mm_processor_kwargs"):
        with pytest.raises(ConfigError, match="config field of its own"):
            load_config(CONFIGS / "cpu-tiny.yaml", [f"extra_args={{{key}: half}}"])


def test_fp16_is_left_to_vllm_for_a_model_that_is_not_gemma3(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, {"model_type": "llama", "max_position_embeddings": 4096})
    cfg = load_config(None, {"model": str(folder), "device": "cpu", "dtype": "float16"})
    assert cfg.dtype == "float16"


@pytest.mark.parametrize(
    ("config", "limit"),
    [
        ("cpu-tiny.yaml", 8192),  # the stand-in preset
        ("medgemma-4b-it.yaml", 131072),  # serve/model/hub_configs
        ("medgemma-27b-text-it-tp2.yaml", 131072),  # flat Gemma3ForCausalLM layout
        ("cpu-volumes.yaml", 131072),  # the volumes preset: MedGemma 1.5's context
        ("medgemma-1.5-4b-it.yaml", 131072),  # hub_configs (unchecked: "at least 128K")
    ],
)
def test_max_model_len_above_the_models_names_both_numbers(config: str, limit: int) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / config, [f"max_model_len={limit + 1}"])
    msg = str(err.value)
    assert f"max_model_len: {limit + 1}" in msg and f"{limit}" in msg, msg
    assert load_config(CONFIGS / config, [f"max_model_len={limit}"]).max_model_len == limit


def test_max_model_len_of_a_local_folder_comes_from_its_config_json(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path, {"model_type": "gemma3", "text_config": {"max_position_embeddings": 2048}}
    )
    cfg = load_config(None, {"model": str(folder), "device": "cpu", "max_model_len": 2049})
    with pytest.raises(ConfigError, match="2049 is above the context length .* 2048"):
        preflight(cfg)


def test_unknown_model_gets_no_context_check(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, {})
    cfg = load_config(None, {"model": str(folder), "device": "cpu", "max_model_len": 10**6})
    preflight(cfg)
    assert cfg.max_model_len == 10**6
    cfg = load_config(None, {"model": "org/some-model", "device": "cpu", "max_model_len": 10**6})
    assert cfg.max_model_len == 10**6


def test_pan_and_scan_options_load() -> None:
    kwargs = (
        "mm_processor_kwargs={do_pan_and_scan: true, pan_and_scan_min_crop_size: 256, "
        "pan_and_scan_max_num_crops: 4, pan_and_scan_min_ratio_to_activate: 1.2}"
    )
    cfg = load_config(CONFIGS / "cpu-tiny.yaml", [kwargs])
    assert cfg.mm_processor_kwargs == {
        "do_pan_and_scan": True,
        "pan_and_scan_min_crop_size": 256,
        "pan_and_scan_max_num_crops": 4,
        "pan_and_scan_min_ratio_to_activate": 1.2,
    }


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ("{pan_and_scan_max_crops: 2}", "'pan_and_scan_max_crops' is not a Gemma 3 image"),
        ("{do_pan_and_scan: 'yes'}", "do_pan_and_scan is 'yes', not true or false"),
        ("{pan_and_scan_max_num_crops: 0}", "pan_and_scan_max_num_crops is 0, not a positive int"),
        ("{pan_and_scan_min_ratio_to_activate: -1}", "not a positive float"),
    ],
)
def test_bad_image_processor_options_are_named(kwargs: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "cpu-tiny.yaml", [f"mm_processor_kwargs={kwargs}"])
    assert needle in str(err.value), str(err.value)


def test_pure_rules() -> None:
    assert is_gemma3("google/medgemma-4b-it", None)
    assert is_gemma3("x/y", {"architectures": ["Gemma3ForCausalLM"]})
    assert not is_gemma3("google/medgemma-like-name", {"model_type": "llama"})
    assert context_length({"max_position_embeddings": 4096}) == 4096
    assert context_length(GEMMA3) == 131072
    assert context_length({}) is None
    assert gemma3_pitfall("bfloat16", 131072, {"do_pan_and_scan": True}, "m", GEMMA3) is None
    assert gemma3_pitfall("auto", None, None, "m", GEMMA3) is None
