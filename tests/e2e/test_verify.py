"""`python -m serve verify` against the real vLLM server on the `verify` stand-in
(configs/deployments/cpu-verify.yaml: the session's `verify_server`, shared with
test_lora), and the mutations it must catch: broken image preprocessing, and the image
attention mask flipped. The command runs in this process (its `main(argv)`), the reference
models loaded once for the module; the error test runs it as a user types it.

Finding (vLLM 0.32, CPU): vLLM's own CPU attention backend attends causally over image
tokens, where Gemma 3 (and transformers, and vLLM's GPU backends) attend bidirectionally
within each image; the served answers then equaled transformers' only with `--image-attention
causal`. The project's vLLM plugin (serve/attention, docs/fidelity.md) adds Gemma 3's mask to
the CPU backend: the served answers equal transformers' with Gemma 3's own mask, and the
causal reference is the flipped one. Evidence, in .venv/lib/python3.11/site-packages/vllm/:
- transformers_utils/model_arch_config_convertor.py:364-384: gemma3 is an "mm prefix LM"
  (bidirectional attention over image positions); model_executor/layers/attention/
  attention.py:344 asks the backend selector for `use_mm_prefix`;
- v1/attention/backend.py:175 `supports_mm_prefix()` is False unless a backend overrides it,
  and v1/attention/backends/cpu_attn.py does not; platforms/cpu.py:177-179 returns CPU_ATTN
  whatever `use_mm_prefix` says (platforms/cuda.py:399 validates each candidate backend,
  and backend.py:307 refuses one without mm-prefix support);
- v1/worker/gpu_model_runner.py:2336-2382 and 2412 (the CPU runner subclasses it,
  cpu_model_runner.py:23) put the image ranges into `mm_req_doc_ranges` of
  CommonAttentionMetadata; cpu_attn.py's metadata builder never reads them (the plugin's
  builder does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from serve.standin import tiny_model
from tests.conftest import CONFIGS, REPO
from tests.e2e.launcher import LiveServer
from tests.in_process import run_main

pytestmark = pytest.mark.slow  # verify_server: a vLLM server besides the session's `server`
CONFIG = CONFIGS / "cpu-verify.yaml"
IMAGE_PROMPTS = ("one-image", "two-images", "follow-up", "ct-volume")


Verify = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="module")
def reference_once() -> Iterator[None]:
    """verify's reference models loaded once for the module: `serve.verify.reference.load`
    answers a (folder, dtype, device, adapter) it has loaded before from memory (most tests
    compare against the same weights; a load takes seconds)."""
    from serve.verify import reference

    real, loaded = reference.load, dict[tuple[Any, ...], Any]()

    def load_once(
        folder: Path, dtype: str, device: str = "cpu", adapter_dir: Path | None = None
    ) -> Any:
        key = (Path(folder), dtype, device, adapter_dir and Path(adapter_dir))
        if key not in loaded:
            loaded[key] = real(folder, dtype, device, adapter_dir=adapter_dir)
        return loaded[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reference, "load", load_once)
        yield


@pytest.fixture
def verify(
    reference_once: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Verify:
    """`verify(server, ARGS)`: `python -m serve verify --config cpu-verify.yaml --base-url
    URL ARGS`, run in this process (serve's `main(argv)`)."""
    from serve.__main__ import main

    def run(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setenv("MEDGEMMA_API_KEY", server.api_key)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        argv = ["verify", "--config", str(CONFIG), "--base-url", server.base_url, *args]
        r = run_main(main, argv, capsys)
        print(r.stdout)
        return r

    return run


def lines(r: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Prompt name -> its printed line."""
    return {
        line.split(":", 1)[0]: line
        for line in r.stdout.splitlines()
        if line.split(":", 1)[0] in ("text", *IMAGE_PROMPTS)
    }


def assert_image_prompts_fail(r: subprocess.CompletedProcess[str]) -> None:
    out = lines(r)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "fidelity: 1/5 prompts match" in r.stdout, r.stdout
    assert out["text"].startswith("text: match: tokens equal, 16 compared"), out
    for name in IMAGE_PROMPTS:
        assert out[name].startswith(f"{name}: MISMATCH"), out


@pytest.fixture(scope="module")
def verify_model_dir() -> Path:
    """The folder the server loads (what verify's reference loads by default)."""
    return tiny_model.ensure("verify", 0)


def test_served_answers_equal_gemma3s_reference(verify_server: LiveServer, verify: Verify) -> None:
    """The reference attends as Gemma 3 does (bidirectionally within each image): every
    prompt's tokens are equal, within the tolerance (the image-mask plugin at work)."""
    r = verify(verify_server)
    assert r.returncode == 0, (r.stdout, r.stderr[-2000:])
    assert "fidelity: 5/5 prompts match" in r.stdout, r.stdout
    out = lines(r)
    for name in ("text", *IMAGE_PROMPTS):
        assert out[name].startswith(f"{name}: match: tokens equal, 16 compared"), out


def test_the_flipped_image_mask_is_caught(verify_server: LiveServer, verify: Verify) -> None:
    """One thing differs from the passing comparison above: the reference's image mask
    (causal, vLLM's CPU backend without the plugin). Text matches; every image prompt fails."""
    assert_image_prompts_fail(verify(verify_server, "--image-attention", "causal"))


def test_broken_image_preprocessing_is_caught(
    verify_server: LiveServer, verify: Verify, verify_model_dir: Path, tmp_path: Path
) -> None:
    """The reference normalises pixels with another mean: text matches, images do not."""
    broken = tmp_path / "broken-preprocessing"
    shutil.copytree(verify_model_dir, broken)
    conf = broken / "processor_config.json"
    data = json.loads(conf.read_text())
    assert data["image_processor"]["image_mean"] == [0.5, 0.5, 0.5], data
    data["image_processor"]["image_mean"] = [0.4, 0.4, 0.4]
    conf.write_text(json.dumps(data))
    r = verify(verify_server, "--reference-model", str(broken))
    assert_image_prompts_fail(r)


def test_a_server_serving_another_model_is_one_line(verify_server: LiveServer) -> None:
    """The command as a user types it, in its own process."""
    argv = [sys.executable, "-m", "serve", "verify", "--config", str(CONFIG)]
    argv += ["--base-url", verify_server.base_url, "--model", "medgemma-4b-it"]
    env = {**os.environ, "MEDGEMMA_API_KEY": verify_server.api_key, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert line.startswith(
        f"error: the server at {verify_server.base_url} serves ['tiny-medgemma-verify', "
    ) and line.endswith("], not medgemma-4b-it"), line
    assert "\n" not in line, line


def test_the_image_changes_the_served_answer(verify_server: LiveServer) -> None:
    """Same text, the CT slice or the MR slice: different greedy tokens from the server
    (on the `tiny` preset, whose image projection is zeros, they would be equal)."""
    from clients.messages import build_messages
    from serve.verify import served
    from serve.verify.prompts import CT_FILE, MR_FILE, image_part

    api = served.client(verify_server.base_url, verify_server.api_key)
    answers = [
        served.generate(
            api,
            verify_server.model,
            build_messages("Describe this slice.", [image_part(name)]),
            max_tokens=8,
            top_k=1,
        ).token_ids
        for name in (CT_FILE, MR_FILE)
    ]
    assert answers[0] != answers[1], answers


def test_the_adapter_equals_transformers_plus_peft(
    verify_server: LiveServer, verify: Verify
) -> None:
    """`verify --model ADAPTER`: the served LoRA adapter against transformers + peft on the
    same adapter folder (Gemma 3's image mask, as for the base)."""
    r = verify(verify_server, "--model", "verify-lora")
    assert r.returncode == 0, (r.stdout, r.stderr[-2000:])
    assert "+ peft adapter" in r.stdout and "fidelity: 5/5 prompts match" in r.stdout, r.stdout


def test_the_adapter_changes_the_served_answer(verify_server: LiveServer) -> None:
    """Same image + text prompt, base or adapter: different greedy tokens."""
    from serve.verify import served
    from serve.verify.prompts import fixed_prompts

    api = served.client(verify_server.base_url, verify_server.api_key)
    prompt = next(p for p in fixed_prompts() if p.name == "one-image")
    answers = [
        served.generate(api, name, prompt.messages, max_tokens=16, top_k=1).token_ids
        for name in (verify_server.model, "verify-lora")
    ]
    assert answers[0] != answers[1], answers
