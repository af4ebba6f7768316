"""Config -> vLLM command line and environment; every shipped config through vLLM's parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.command.argv import (
    check_vllm_argv,
    compile_cache_env,
    for_host,
    local_server_env,
    render_shell,
    server_command,
    to_server_env,
    to_vllm_argv,
)
from serve.config.deployment import load_config
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "deployments"
SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml"))


def opts(argv: list[str]) -> dict[str, str | None]:
    """--flag value pairs of an argv, for order-independent assertions."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[argv[i]] = argv[i + 1]
            i += 2
        else:
            out[argv[i]] = None
            i += 1
    return out


def test_cpu_default_argv() -> None:
    cfg = load_config(CONFIGS / "cpu-tiny.yaml")
    o = opts(to_vllm_argv(cfg, "/models/tiny"))
    assert o["--model"] == "/models/tiny"
    assert o["--served-model-name"] == "tiny-medgemma-random-weights"
    assert o["--limit-mm-per-prompt"] == '{"image":2}'
    assert o["--max-model-len"] == "4096"
    assert o["--dtype"] == "auto"  # resolved per host by for_host (server_command)
    assert "--tensor-parallel-size" not in o
    assert "--enable-log-requests" not in o  # prompts are patient data
    assert o["--mm-processor-cache-gb"] == "0"
    assert "--mm-processor-cache-type" not in o  # no cache, no type


@pytest.mark.parametrize(
    ("name", "overrides", "passed"),
    [
        ("cpu-tiny.yaml", [], True),
        ("cpu-volumes.yaml", [], True),
        ("cpu-tiny.yaml", ["limit_mm_per_prompt={image: 0}"], False),  # no image to split
        ("medgemma-4b-it.yaml", [], False),  # vLLM forces it on CUDA (platforms/cuda.py)
    ],
)
def test_images_are_never_split_across_prefill_steps_on_the_cpu(
    name: str, overrides: list[str], passed: bool
) -> None:
    """Gemma 3's image mask (serve/attention) is exact only for an image computed in one
    step; vLLM forces --disable-chunked-mm-input on CUDA only."""
    argv = to_vllm_argv(load_config(CONFIGS / name, overrides), "/m")
    assert ("--disable-chunked-mm-input" in argv) is passed, argv


def test_processed_image_cache_is_the_shared_memory_one() -> None:
    """vLLM's default type (`lru`) drifts after a request rejected once its images were
    processed (500 on the resend); `shm` cannot (serve.command.argv.MM_CACHE_TYPE)."""
    cfg = load_config(CONFIGS / "cpu-tiny.yaml", ["mm_processor_cache_gb=1.5"])
    argv = to_vllm_argv(cfg, "/m")
    o = opts(argv)
    assert o["--mm-processor-cache-gb"] == "1.5"
    assert o["--mm-processor-cache-type"] == "shm", argv
    assert check_vllm_argv(argv) is None


@pytest.mark.parametrize("name", ["cpu-volumes.yaml", "medgemma-1.5-4b-it.yaml"])
def test_configs_with_the_cache_on_use_shared_memory(name: str) -> None:
    o = opts(to_vllm_argv(load_config(CONFIGS / name), "/m"))
    assert float(o["--mm-processor-cache-gb"] or 0) > 0
    assert o["--mm-processor-cache-type"] == "shm"


def test_gpu_argv_parallel_and_booleans() -> None:
    cfg = load_config(
        CONFIGS / "medgemma-27b-it-tp4.yaml",
        {"enable_prefix_caching": False, "extra_args": {"enforce_eager": True}},
    )
    o = opts(to_vllm_argv(cfg))
    assert o["--model"] == "google/medgemma-27b-it"
    assert o["--tensor-parallel-size"] == "4"
    assert o["--gpu-memory-utilization"] == "0.9"
    assert "--no-enable-prefix-caching" in o and "--enforce-eager" in o


def test_text_only_config_sends_no_mm_limits() -> None:
    cfg = load_config(CONFIGS / "medgemma-27b-text-it-tp2.yaml")
    assert "--limit-mm-per-prompt" not in to_vllm_argv(cfg)


def test_cpu_env_and_api_key_by_reference() -> None:
    cfg = load_config(CONFIGS / "cpu-tiny-tp2.yaml")
    env = to_server_env(cfg, {"MEDGEMMA_API_KEY": "s3cret"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_API_KEY"] == "s3cret"
    cmd = server_command(cfg, "/m")
    assert "s3cret" not in " ".join(cmd)
    shown = render_shell(cmd, env)
    assert "s3cret" not in shown and "VLLM_API_KEY=<set from environment>" in shown


def test_hub_model_keeps_hub_reachable_and_no_key_without_env() -> None:
    cfg = load_config(CONFIGS / "medgemma-4b-it.yaml")
    env = to_server_env(cfg, {})
    assert "HF_HUB_OFFLINE" not in env and "VLLM_API_KEY" not in env
    assert not any(k.startswith("VLLM_CPU_") for k in env)


def test_cpu_servers_compile_without_aot_gpu_servers_keep_it() -> None:
    cpu = to_server_env(load_config(CONFIGS / "cpu-tiny.yaml"), {})
    assert cpu["VLLM_USE_AOT_COMPILE"] == "0"
    assert "VLLM_USE_AOT_COMPILE" not in to_server_env(
        load_config(CONFIGS / "medgemma-4b-it.yaml"), {}
    )


def test_compile_caches_go_under_the_cache_folder_unless_the_environment_names_them() -> None:
    env = compile_cache_env(Path("/c"), {})
    assert env == {"VLLM_CACHE_ROOT": "/c/vllm", "TORCHINDUCTOR_CACHE_DIR": "/c/torchinductor"}
    assert compile_cache_env(Path("/c"), {"VLLM_CACHE_ROOT": "/mine"}) == {
        "TORCHINDUCTOR_CACHE_DIR": "/c/torchinductor"
    }
    local = local_server_env(load_config(CONFIGS / "cpu-tiny.yaml"), {"MEDGEMMA_CACHE": "/mc"})
    assert local["VLLM_CACHE_ROOT"] == "/mc/vllm" and local["VLLM_USE_AOT_COMPILE"] == "0"


def test_rendered_environment_names_no_local_cache_folder() -> None:
    env = to_server_env(load_config(CONFIGS / "medgemma-4b-it.yaml"), {})
    assert "VLLM_CACHE_ROOT" not in env and "TORCHINDUCTOR_CACHE_DIR" not in env


@pytest.fixture(scope="module")
def vllm_parser_check():
    return check_vllm_argv


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_passes_pydantic_and_vllm_parser(name: str, vllm_parser_check) -> None:
    cfg = load_config(CONFIGS / name)
    argv = to_vllm_argv(cfg, "/models/x" if cfg.stand_in else None)
    assert vllm_parser_check(argv) is None, (name, argv)


def test_vllm_parser_names_an_unknown_passthrough_flag(vllm_parser_check) -> None:
    cfg = load_config(CONFIGS / "cpu-tiny.yaml", ["extra_args.no_such_flag=1"])
    err = vllm_parser_check(to_vllm_argv(cfg, "/m"))
    assert err is not None and "--no-such-flag" in err, err


@pytest.mark.parametrize(
    ("flags", "device", "dtype", "expected"),
    [
        ({"avx2"}, "cpu", "auto", "float32"),  # bf16 products are far slower without it
        ({"avx2", "avx512_bf16"}, "cpu", "auto", "bfloat16"),
        ({"amx_bf16"}, "cpu", "auto", "bfloat16"),
        ({"avx2"}, "cpu", "bfloat16", "bfloat16"),  # an explicit dtype is kept
        ({"avx2"}, "cuda", "auto", "auto"),  # on GPUs `auto` is vLLM's own
    ],
)
def test_for_host_resolves_auto_dtype_on_the_cpu(
    flags: set[str], device: str, dtype: str, expected: str
) -> None:
    name = "cpu-tiny.yaml" if device == "cpu" else "medgemma-4b-it.yaml"
    cfg = load_config(CONFIGS / name, {"dtype": dtype})
    assert opts(to_vllm_argv(for_host(cfg, flags), "/m"))["--dtype"] == expected
    assert cfg.dtype == dtype  # the config itself is not changed


PINNED = "0123456789abcdef0123456789abcdef01234567"


def test_a_pinned_hub_model_loads_its_commit_and_a_folder_ignores_it(tmp_path: Path) -> None:
    hub = load_config(CONFIGS / "medgemma-4b-it.yaml", [f"revision={PINNED}"])
    got = opts(to_vllm_argv(hub))
    assert got["--revision"] == got["--tokenizer-revision"] == PINNED, got
    assert check_vllm_argv(to_vllm_argv(hub)) is None  # vLLM's own parser takes both
    # The weights in a folder (the stand-in's, or a download): no revision to pass.
    assert "--revision" not in to_vllm_argv(hub, model_path=str(tmp_path))
    folder = load_config(
        CONFIGS / "medgemma-4b-it.yaml", [f"model={tmp_path}", f"revision={PINNED}"]
    )
    assert "--revision" not in to_vllm_argv(folder)
    assert "--revision" not in to_vllm_argv(load_config(CONFIGS / "medgemma-4b-it.yaml"))
