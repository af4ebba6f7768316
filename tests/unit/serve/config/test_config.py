"""Deployment config: loading, validation messages, overrides; the schema reads no file
but the YAML (plan and render load any config), the launch pre-flight checks the files."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.config.deployment import ConfigError, DeploymentConfig, load_config
from serve.config.yaml_file import describe_fields, merge_overrides
from serve.launch.preflight import preflight
from tests.conftest import REPO

CONFIGS = REPO / "configs" / "deployments"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "deploy.yaml"
    p.write_text(text)
    return p


def test_cpu_default_loads() -> None:
    cfg = load_config(CONFIGS / "cpu-tiny.yaml")
    assert cfg.stand_in is not None and cfg.stand_in.preset == "tiny"
    assert cfg.device == "cpu"
    assert "random" in cfg.model_name
    assert cfg.enable_log_requests is False


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    p = write(tmp_path, "stand_in: {preset: tiny}\ndevice: cpu\nmax_num_seq: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg and "max_num_seq" in msg and "unknown key" in msg, msg


def test_wrong_type_names_field(tmp_path: Path) -> None:
    p = write(tmp_path, "stand_in: {preset: tiny}\ndevice: cpu\nmax_num_seqs: lots\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "max_num_seqs" in msg and "'lots'" in msg and str(p) in msg, msg


def test_missing_model_path_names_field(tmp_path: Path) -> None:
    p = write(tmp_path, f"model: {tmp_path / 'no-such-model'}\ndevice: cpu\n")
    cfg = load_config(p)  # the schema reads no file
    with pytest.raises(ConfigError) as err:
        preflight(cfg, str(p))
    msg = str(err.value)
    assert "model" in msg and "does not exist" in msg and str(p) in msg, msg


def test_folder_without_config_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    cfg = load_config(None, {"model": str(tmp_path / "weights"), "device": "cpu"})
    with pytest.raises(ConfigError, match="no config.json"):
        preflight(cfg)


def absent_files_config(tmp_path: Path) -> Path:
    """A GPU config naming a TLS pair and a media folder that do not exist here."""
    return write(
        tmp_path,
        (CONFIGS / "medgemma-4b-it.yaml").read_text()
        + f"ssl_certfile: {tmp_path / 'c.pem'}\nssl_keyfile: {tmp_path / 'k.pem'}\n"
        + f"allowed_local_media_path: {tmp_path / 'media'}\n",
    )


def test_plan_and_render_load_a_config_whose_files_are_absent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve.plan import cli as plan_cli
    from serve.render import cli as render_cli

    p = absent_files_config(tmp_path)
    cfg = load_config(p)
    assert cfg.ssl_certfile == tmp_path / "c.pem"
    assert plan_cli.main(["--config", str(p)]) == 0, capsys.readouterr().err
    assert "GiB" in capsys.readouterr().out
    # The pods take the certificate from a Secret; the local files are never read.
    tls = ["--set", "kubernetes.tls_secret=medgemma-tls"]
    assert render_cli.main(["k8s", "--config", str(p), *tls]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "kind: Deployment" in out and "secretName: medgemma-tls" in out, out
    # A local model folder that is not here loads too (nothing reads it).
    local = load_config(None, {"model": str(tmp_path / "weights"), "device": "cpu"})
    assert local.model == str(tmp_path / "weights")


def test_the_preflight_refuses_absent_files_with_the_old_message(tmp_path: Path) -> None:
    p = absent_files_config(tmp_path)
    with pytest.raises(ConfigError) as err:
        preflight(load_config(p), str(p))
    assert str(err.value).splitlines() == [
        f"{p}: invalid deployment config",
        f"  (top level): ssl_certfile: {str(tmp_path / 'c.pem')!r} is not a file",
        f"  (top level): ssl_keyfile: {str(tmp_path / 'k.pem')!r} is not a file",
        f"  (top level): allowed_local_media_path: {str(tmp_path / 'media')!r} is not a folder",
    ]


def test_the_launcher_runs_the_preflight_before_a_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve.launch import cli

    p = absent_files_config(tmp_path)
    assert cli.main(["--config", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {p}: invalid deployment config\n  (top level): "), err
    assert "ssl_certfile" in err and "is not a file" in err, err


def test_nested_unknown_key_and_bad_preset(tmp_path: Path) -> None:
    p = write(tmp_path, "stand_in: {preset: huge, sed: 1}\ndevice: cpu\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "stand_in.preset" in msg and "stand_in.sed" in msg, msg


def test_cpu_volumes_is_the_one_five_twin_for_volumes() -> None:
    """85 slices at 256 + 4 tokens and their labels are ~22.9 K tokens: the CPU twin takes
    them in one prompt, with room, and reuses them for a follow-up question."""
    cfg = load_config(CONFIGS / "cpu-volumes.yaml")
    assert cfg.stand_in is not None and cfg.stand_in.preset == "volumes", cfg.stand_in
    assert cfg.max_model_len is not None and cfg.max_model_len >= 32768, cfg.max_model_len
    assert cfg.limit_mm_per_prompt["image"] >= 128 and cfg.enable_prefix_caching, cfg


@pytest.mark.parametrize(
    "text, needle",
    [
        ("- a\n- b\n", "top level must be a mapping"),
        ("model: [unclosed\n", "not valid YAML"),
        ("device: cpu\n", "exactly one of `model`"),
        ("model: google/medgemma-4b-it\nstand_in: {}\n", "exactly one of `model`"),
        ("model: 'not a hub id!'\n", "neither an existing local folder nor a hub id"),
        ("model: google/medgemma-4b-it\ncpu_kvcache_space_gib: 4\n", "device: cpu only"),
        ("stand_in: {}\ndevice: cpu\ngpu_memory_utilization: 0.9\n", "device: cuda only"),
        ("stand_in: {}\ndevice: cpu\nport: 70000\n", "port"),
        ("stand_in: {}\ndevice: tpu\n", "device"),
        ("stand_in: {}\ndevice: cpu\napi_key_env: 'MY KEY'\n", "not an environment variable name"),
        (
            "stand_in: {}\ndevice: cpu\nextra_args: {api_key: hunter2}\n",
            "api_key may not be written",
        ),
        ("stand_in: {}\ndevice: cpu\nextra_args: {max_num_seqs: 3}\n", "config field of its own"),
        (  # an image split across prefill steps: Gemma 3's image mask cannot be exact
            "stand_in: {}\ndevice: cpu\nextra_args: {disable_chunked_mm_input: false}\n",
            "disable_chunked_mm_input: false would let vLLM split an image",
        ),
    ],
)
def test_bad_configs_are_named(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert needle in str(err.value), str(err.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("configs/does-not-exist.yaml")


def test_overrides_apply_yaml_values_and_dotted_keys() -> None:
    cfg = load_config(
        CONFIGS / "cpu-tiny.yaml",
        ["port=9123", "limit_mm_per_prompt={image: 3}", "stand_in.seed=7", "restart.enabled=true"],
    )
    assert cfg.port == 9123
    assert cfg.limit_mm_per_prompt == {"image": 3}
    assert cfg.stand_in is not None and cfg.stand_in.seed == 7 and cfg.stand_in.preset == "tiny"
    assert cfg.restart.enabled is True


def test_model_override_replaces_stand_in(tiny_model_dir: Path) -> None:
    cfg = load_config(CONFIGS / "cpu-tiny.yaml", {"model": str(tiny_model_dir)})
    assert cfg.stand_in is None and cfg.model == str(tiny_model_dir)
    # The served name stays the config's, so clients need not change.
    assert cfg.model_name == "tiny-medgemma-random-weights"


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(CONFIGS / "cpu-tiny.yaml", ["port"])


def test_stand_in_override_replaces_model() -> None:
    cfg = load_config(CONFIGS / "medgemma-4b-it.yaml", ["stand_in.preset=bench"])
    assert cfg.model is None and cfg.stand_in is not None and cfg.stand_in.preset == "bench"


def test_exclusive_fields_keep_the_last_override() -> None:
    data = {"model": "org/a", "port": 1}
    merged = merge_overrides(data, ["stand_in.seed=3", "model=org/b"], ("model", "stand_in"))
    assert merged == {"model": "org/b", "port": 1}, merged
    assert merge_overrides(data, ["stand_in.seed=3"], ("model", "stand_in")) == {
        "port": 1,
        "stand_in": {"seed": 3},
    }


def test_scenario_and_config_errors_share_one_loader(tmp_path: Path) -> None:
    """The same bad file gets the same message shape from both kinds, each in its words."""
    from benchmarks.runner.scenario import ScenarioError, load_scenario

    p = write(tmp_path, "- a\n")
    with pytest.raises(ConfigError) as as_config:
        load_config(p)
    with pytest.raises(ScenarioError) as as_scenario:
        load_scenario(p)
    expected = f"{p}: top level must be a mapping of fields, not list"
    assert str(as_config.value) == str(as_scenario.value) == expected, (
        as_config.value,
        as_scenario.value,
    )
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.yaml")


def test_merge_does_not_mutate_input() -> None:
    data = {"stand_in": {"preset": "tiny"}}
    merge_overrides(data, ["stand_in.seed=3"])
    assert data == {"stand_in": {"preset": "tiny"}}


def test_every_field_is_described() -> None:
    missing = [n for n, f in DeploymentConfig.model_fields.items() if not f.description]
    assert missing == []


def test_help_config_lists_nested_sections() -> None:
    text = describe_fields(DeploymentConfig)
    for name in (
        "max_num_seqs:",
        "stand_in.preset:",
        "restart.max_restarts:",
        "kubernetes.",
        "ray.",
    ):
        assert name in text, name
    assert "None" not in [line.split(": ", 1)[-1] for line in text.splitlines()]


def test_a_server_start_runs_the_preflight_first(tmp_path: Path) -> None:
    """ServerProcess.start (tests, benchmarks, replicas) refuses before starting anything;
    the error is a ConfigError to the CLIs and a LaunchError to what starts servers."""
    from serve.launch.server import ServerProcess
    from serve.process import LaunchError

    cfg = load_config(None, {"model": str(tmp_path / "weights"), "device": "cpu"})
    server = ServerProcess(cfg, tmp_path / "log" / "serve.log")
    with pytest.raises(LaunchError) as err:
        server.start()
    assert isinstance(err.value, ConfigError) and "does not exist" in str(err.value)
    assert server.proc is None and not (tmp_path / "log").exists()


def test_a_revision_is_a_commit_hash_and_an_unpinned_hub_model_is_warned_of(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from serve.launch import cli
    from tests.in_process import run_main

    gpu = str(CONFIGS / "medgemma-4b-it.yaml")
    local = ["--set", "host=127.0.0.1"]  # no key needed on loopback
    bad = run_main(cli.main, ["--config", gpu, "--set", "revision=main", "--dry-run"], capsys)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad
    assert "revision: String should match pattern '^[0-9a-f]{40}$'" in bad.stderr, bad.stderr
    unpinned = run_main(cli.main, ["--config", gpu, *local, "--dry-run"], capsys)
    assert unpinned.returncode == 0, unpinned.stderr
    warning = [ln for ln in unpinned.stderr.splitlines() if ln.startswith("warning:")]
    assert warning == [
        "warning: revision: google/medgemma-4b-it is a hub id with no commit pinned, so each "
        "new cache loads whatever the hub's main branch holds then; set `revision:` to the "
        "commit hash you verified (docs/deploying.md)"
    ], unpinned.stderr
    pinned = run_main(
        cli.main, ["--config", gpu, *local, "--set", f"revision={'a' * 40}", "--dry-run"], capsys
    )
    assert pinned.returncode == 0 and "warning:" not in pinned.stderr, pinned.stderr
    assert f"--revision {'a' * 40}" in pinned.stdout, pinned.stdout
    tiny = run_main(cli.main, ["--config", str(CONFIGS / "cpu-tiny.yaml"), "--dry-run"], capsys)
    assert tiny.returncode == 0 and "warning:" not in tiny.stderr, tiny.stderr
