"""LoRA fine-tunes without a server: the `lora:` config section and its errors, the vLLM
flags and environment it becomes (checked by vLLM's own parser), the pre-flight's
adapter-fits-base check, the planner's LoRA memory, and the launcher's one-line errors for
bad adapters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from serve.command.argv import check_vllm_argv, to_server_env, to_vllm_argv
from serve.command.lora import lora_argv, planned_paths
from serve.config.deployment import ConfigError, DeploymentConfig, load_config
from serve.launch.preflight import adapter_problem, module_dims, preflight, safetensors_shapes
from serve.model.presets import PRESETS
from serve.model.shapes import ModelShape
from serve.paths import standin_dir
from serve.plan import capacity as cap
from tests.conftest import CONFIGS, REPO

LORA_YAML = CONFIGS / "cpu-tiny-lora.yaml"
TINY = PRESETS["tiny"]
MODULES = {
    "self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
}


def tiny_dims() -> dict[str, tuple[int, int]]:
    t = TINY
    return module_dims(
        t.text_hidden, t.text_intermediate, t.text_heads, t.text_kv_heads, t.head_dim
    )


def fake_adapter(
    folder: Path,
    *,
    rank: int = 8,
    base: str = "somewhere/tiny-medgemma-tiny-seed0",
    dims: dict[str, tuple[int, int]] | None = None,
    layers: int = TINY.text_layers,
) -> Path:
    """A peft-layout adapter folder (config + safetensors of zeros) of the given shapes."""
    dims = dims or tiny_dims()
    tensors = {}
    for i in range(layers):
        for block, names in MODULES.items():
            for name in names:
                n_in, n_out = dims[name]
                key = f"base_model.model.model.language_model.layers.{i}.{block}.{name}"
                tensors[f"{key}.lora_A.weight"] = np.zeros((rank, n_in), np.float32)
                tensors[f"{key}.lora_B.weight"] = np.zeros((n_out, rank), np.float32)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "base_model_name_or_path": base}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def with_adapter(source: str, **lora: object) -> DeploymentConfig:
    overrides = [f"lora.adapters={json.dumps({'ft': source})}"]
    overrides += [f"lora.{k}={json.dumps(v)}" for k, v in lora.items()]
    return load_config(LORA_YAML, overrides)


def config_error(source: str, **lora: object) -> str:
    """The pre-flight's message for an adapter (the config itself loads: it is pure)."""
    cfg = with_adapter(source, **lora)
    with pytest.raises(ConfigError) as err:
        preflight(cfg, str(LORA_YAML))
    msg = str(err.value)
    assert msg.startswith(f"{LORA_YAML}: invalid deployment config\n  (top level): "), msg
    return msg


# --- config ---------------------------------------------------------------------------


def test_the_lora_config_loads_with_a_stand_in_adapter() -> None:
    cfg = load_config(LORA_YAML)
    assert cfg.lora is not None and cfg.lora.runtime_updates
    assert cfg.lora.adapters["tiny-lora"].stand_in.rank == 8  # type: ignore[union-attr]
    assert load_config(CONFIGS / "cpu-tiny.yaml").lora is None


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("lora.max_rank=12", "12 is not a rank vLLM accepts"),
        ("lora.adapters={x: {stand_in: {rank: 32}}}", "rank 32 is above max_rank 16"),
        ("lora.max_cpu_loras=1", "max_cpu_loras (1) must be at least max_loras (2)"),
        ("lora.adapters={x: 'not an id'}", "neither an existing local folder nor a hub id"),
        ("lora.adapters={tiny-medgemma-random-weights: {stand_in: {}}}", "served model's own"),
        ("lora.adapters={x: {stand_in: {rnk: 8}}}", "rnk"),
        ("lora.max_loras=0", "max_loras"),
    ],
)
def test_bad_lora_sections_are_named(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(LORA_YAML, [override])
    assert needle in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("org/adapter", "hub adapter 'org/adapter' cannot fit"),
        ("/no/such/adapter", "local path '/no/such/adapter' does not exist"),
    ],
)
def test_adapters_this_machine_cannot_serve_are_the_preflights(source: str, needle: str) -> None:
    assert needle in config_error(source)


def test_a_stand_in_adapter_needs_a_stand_in_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        load_config(LORA_YAML, [f"model={model}"])
    assert "a stand_in adapter needs a `stand_in` model" in str(err.value)


def test_a_local_adapter_that_fits_loads(tmp_path: Path) -> None:
    folder = fake_adapter(tmp_path / "ft", base=str(standin_dir("tiny", 0)))
    cfg = with_adapter(str(folder))
    preflight(cfg)
    assert planned_paths(cfg) == {"ft": str(folder)}


def test_a_local_adapter_above_max_rank_names_rank_and_max(tmp_path: Path) -> None:
    msg = config_error(str(fake_adapter(tmp_path / "ft", rank=32)))
    assert "lora.adapters.ft: rank 32 is above lora.max_rank 16" in msg, msg


def test_an_adapter_for_another_base_names_the_base(tmp_path: Path) -> None:
    dims = module_dims(2560, 10240, 8, 4, 256)  # MedGemma 4B's text model
    folder = fake_adapter(tmp_path / "ft", base="google/medgemma-4b-it", dims=dims, layers=2)
    msg = config_error(str(folder))
    assert "lora.adapters.ft: was built for another base model (google/medgemma-4b-it)" in msg
    assert "its down_proj has 10240 inputs, the deployment's model has 128" in msg, msg


def test_a_folder_that_is_no_adapter(tmp_path: Path) -> None:
    (tmp_path / "ft").mkdir()
    msg = config_error(str(tmp_path / "ft"))
    assert "has no adapter_config.json; is it a peft adapter folder?" in msg, msg


# --- adapter_problem (pure) -----------------------------------------------------------


def shapes_of(tmp_path: Path, **kw: object) -> dict[str, list[int]]:
    return safetensors_shapes(fake_adapter(tmp_path / "a", **kw) / "adapter_model.safetensors")  # type: ignore[arg-type]


def test_adapter_problem_by_shapes_and_by_name(tmp_path: Path) -> None:
    shapes = shapes_of(tmp_path)
    conf = {"r": 8, "base_model_name_or_path": "x/other-name"}
    base = (tiny_dims(), TINY.text_layers)
    # Same architecture under another name: the shapes decide, and they fit.
    assert adapter_problem(conf, shapes, max_rank=16, deployment_model="m", base=base) is None
    # More layers than the base has.
    fewer = (tiny_dims(), 2)
    msg = adapter_problem(conf, shapes, max_rank=16, deployment_model="m", base=fewer)
    assert msg is not None and "it has a layer 2, the deployment's model has 2 layers" in msg
    # Unknown base shape: the names decide.
    msg = adapter_problem(conf, shapes, max_rank=16, deployment_model="org/m", base=None)
    assert msg == "was built for another base model (x/other-name); this deployment serves org/m"
    same = {**conf, "base_model_name_or_path": "org/m"}
    assert adapter_problem(same, shapes, max_rank=16, deployment_model="org/m", base=None) is None
    # rank_pattern counts as rank; other peft types are refused.
    ranked = {**conf, "rank_pattern": {"q_proj": 64}}
    msg = adapter_problem(ranked, shapes, max_rank=16, deployment_model="m", base=base)
    assert msg is not None and msg.startswith("rank 64 is above lora.max_rank 16")
    ia3 = {**conf, "peft_type": "IA3"}
    msg = adapter_problem(ia3, shapes, max_rank=16, deployment_model="m", base=base)
    assert msg == "is a IA3 adapter; vLLM serves LoRA only"


# --- argv and environment -------------------------------------------------------------


def opts(argv: list[str]) -> dict[str, list[str]]:
    """Each flag -> the values that follow it."""
    out: dict[str, list[str]] = {}
    key = ""
    for a in argv:
        if a.startswith("--"):
            key = a
            out.setdefault(key, [])
        else:
            out[key].append(a)
    return out


def test_lora_flags_name_every_adapter_with_the_base_as_parent() -> None:
    cfg = load_config(LORA_YAML, ["lora.max_cpu_loras=4", "lora.max_rank=32"])
    argv = to_vllm_argv(cfg, "/m", {"tiny-lora": "/adapters/a"})
    o = opts(argv)
    assert "--enable-lora" in o
    assert o["--max-lora-rank"] == ["32"] and o["--max-loras"] == ["2"]
    assert o["--max-cpu-loras"] == ["4"]
    modules = [json.loads(m) for m in o["--lora-modules"]]
    assert modules == [
        {"name": "tiny-lora", "path": "/adapters/a", "base_model_name": cfg.model_name}
    ]
    assert check_vllm_argv(argv) is None


def test_stand_in_adapters_default_to_their_cache_folder() -> None:
    cfg = load_config(LORA_YAML)
    (module,) = opts(to_vllm_argv(cfg, "/m"))["--lora-modules"]
    path = Path(json.loads(module)["path"])
    assert path.name == "tiny-medgemma-tiny-seed0-lora-r8-seed1"
    assert path.parent == standin_dir("tiny", 0).parent


def test_no_lora_section_no_lora_flags_or_env() -> None:
    cfg = load_config(CONFIGS / "cpu-tiny.yaml")
    assert not any("lora" in a for a in to_vllm_argv(cfg, "/m"))
    assert lora_argv(cfg, {}) == []
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in to_server_env(cfg, {})


def test_runtime_updates_turn_on_vllms_endpoints() -> None:
    cfg = load_config(LORA_YAML)
    assert to_server_env(cfg, {})["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    off = load_config(LORA_YAML, ["lora.runtime_updates=false"])
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in to_server_env(off, {})


# --- planner --------------------------------------------------------------------------


def shape(hidden: int, inter: int, heads: int, kv: int, head_dim: int, layers: int) -> ModelShape:
    return ModelShape(
        name="t",
        source="test",
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        vocab_size=1000,
        max_position_embeddings=8192,
        sliding_window=None,
        layer_types=("full_attention",) * layers,
        tie_word_embeddings=True,
        vision=None,
        mm_tokens_per_image=0,
    )


def test_lora_bytes_per_adapter_by_hand() -> None:
    s = shape(hidden=64, inter=128, heads=2, kv=1, head_dim=32, layers=6)
    # q 64+64, k 64+32, v 64+32, o 64+64, gate 64+128, up 64+128, down 128+64 = 1024 per rank
    assert cap.lora_bytes_per_adapter(s, 16, tp=1, pp=1, dtype_bytes=2) == 1024 * 16 * 6 * 2
    # MedGemma 4B (34 layers): 54,784 per rank and layer; 4 slots at rank 64 in bf16.
    m = shape(hidden=2560, inter=10240, heads=8, kv=4, head_dim=256, layers=34)
    assert cap.lora_slot_bytes(m, 4, 64, tp=1, pp=1, dtype_bytes=2) == 4 * 54_784 * 64 * 34 * 2


def test_lora_bytes_split_over_tensor_and_pipeline_ranks() -> None:
    s = shape(hidden=64, inter=128, heads=2, kv=1, head_dim=32, layers=6)
    # TP 2: column-parallel B and row-parallel A halve; PP 2: half the layers per stage.
    per_rank = 64 + 32 + 64 + 16 + 64 + 16 + 64 + 64 + 64 + 64 + 32 + 64 + 64 + 64
    assert cap.lora_bytes_per_adapter(s, 8, tp=2, pp=1, dtype_bytes=2) == per_rank * 8 * 6 * 2
    assert cap.lora_bytes_per_adapter(s, 8, tp=1, pp=2, dtype_bytes=2) == 1024 * 8 * 3 * 2


def test_the_plan_subtracts_lora_slots_from_the_gpu_kv_budget() -> None:
    from serve.plan.inputs import load_gpus, shape_for_config
    from serve.plan.planner import RequestShape, make_plan

    base = load_config(CONFIGS / "medgemma-4b-it.yaml")
    tuned = load_config(
        CONFIGS / "medgemma-4b-it.yaml", ["lora={adapters: {}, max_loras: 4, max_rank: 64}"]
    )
    s = shape_for_config(base)
    gpu = load_gpus()["l4-24gb"]
    req = RequestShape()
    p0, p1 = make_plan(base, s, gpu, req), make_plan(tuned, s, gpu, req)
    lora = cap.lora_slot_bytes(s, 4, 64, 1, 1, 2)
    assert p1.lora_gib == pytest.approx(lora / cap.GiB)
    assert p0.kv_budget_gib - p1.kv_budget_gib == pytest.approx(lora / cap.GiB)
    assert p1.num_blocks < p0.num_blocks


# --- the launcher's one-line errors ---------------------------------------------------


def serve_dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", "--config", str(LORA_YAML), "--dry-run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("adapter", "needle"),
    [
        ("missing", "local path '{tmp}/missing' does not exist"),
        ("rank32", "rank 32 is above lora.max_rank 16"),
        ("other-base", "was built for another base model (google/medgemma-4b-it)"),
    ],
)
def test_bad_adapters_fail_the_launcher_with_one_clear_error(
    tmp_path: Path, adapter: str, needle: str
) -> None:
    if adapter == "rank32":
        fake_adapter(tmp_path / adapter, rank=32)
    elif adapter == "other-base":
        dims = module_dims(2560, 10240, 8, 4, 256)
        fake_adapter(tmp_path / adapter, base="google/medgemma-4b-it", dims=dims, layers=1)
    r = serve_dry_run("--set", f"lora.adapters={{ft: {tmp_path / adapter}}}")
    assert r.returncode == 2, (r.returncode, r.stdout[-300:], r.stderr[-800:])
    assert "Traceback" not in r.stderr, r.stderr[-800:]
    error = [ln for ln in r.stderr.splitlines() if "lora.adapters.ft:" in ln]
    assert len(error) == 1 and needle.format(tmp=tmp_path) in error[0], r.stderr
    assert r.stderr.startswith("error: "), r.stderr


def test_a_dry_run_builds_nothing(tmp_path: Path) -> None:
    """The stand-in and its LoRA adapter are named by their planned folders, not built."""
    import os

    cache = tmp_path / "cache"
    cache.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "serve", "--config", str(LORA_YAML), "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MEDGEMMA_CACHE": str(cache)},
    )
    assert r.returncode == 0, (r.stdout[-300:], r.stderr[-800:])
    assert list(cache.iterdir()) == [], sorted(p.name for p in cache.rglob("*"))
    base = cache / "tiny-medgemma-tiny-seed0"
    assert f"--model {base} " in r.stdout, r.stdout
    assert f'"path":"{cache}/tiny-medgemma-tiny-seed0-lora-r8-seed1"' in r.stdout, r.stdout


# --- clients --------------------------------------------------------------------------


def test_the_clients_default_is_the_base_beside_its_adapters() -> None:
    from clients.chat import only_model

    parents = {"base": None, "tuned": "base", "other-tuned": "base"}
    assert only_model(list(parents), "URL", parents) == "base"
    with pytest.raises(ValueError, match="serves 2 models"):
        only_model(["a", "b"], "URL", {"a": None, "b": None})
    assert only_model(["solo"], "URL") == "solo"


# --- the stand-in adapter -------------------------------------------------------------


def test_the_stand_in_adapter_is_deterministic_and_changes_only_the_language_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    from serve.standin import adapter

    a = adapter.build(tmp_path / "a", tiny_model_dir, rank=8, seed=1)
    b = adapter.build(tmp_path / "b", tiny_model_dir, rank=8, seed=1)
    ta = load_file(str(a / "adapter_model.safetensors"))
    tb = load_file(str(b / "adapter_model.safetensors"))
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta), "same seed, different weights"
    # Every target layer of every decoder layer, A and B, and nothing of the vision tower.
    assert len(ta) == TINY.text_layers * 7 * 2, sorted(ta)[:5]
    assert all(".language_model.layers." in k and "vision" not in k for k in ta), sorted(ta)
    assert all(v.abs().max() > 0 for k, v in ta.items() if "lora_B" in k), "a zero B"
    config = json.loads((a / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["base_model_name_or_path"] == str(tiny_model_dir)
    # The launch-time check accepts what the builder writes.
    shapes = safetensors_shapes(a / "adapter_model.safetensors")
    base = (tiny_dims(), TINY.text_layers)
    problem = adapter_problem(config, shapes, max_rank=8, deployment_model="x", base=base)
    assert problem is None, problem
