"""serve.verify: the fixed prompts, served-answer parsing, and the CLI's bad-input lines
(no vLLM server: an unreachable port, a missing folder, and the unit tests' fake OpenAI
server serving another model name)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from serve.process import free_port
from serve.verify import cli
from serve.verify.prompts import fixed_prompts
from serve.verify.served import ServedError, parse
from tests.conftest import CONFIGS
from tests.fake_openai import serve_fake_openai

CONFIG = str(CONFIGS / "cpu-verify.yaml")


def test_prompts_cover_text_one_two_images_and_a_follow_up() -> None:
    prompts = fixed_prompts()
    assert [(p.name, p.images) for p in prompts] == [
        ("text", 0),
        ("one-image", 1),
        ("two-images", 2),
        ("follow-up", 1),
    ]
    follow_up = [m["role"] for m in prompts[-1].messages]
    assert follow_up == ["system", "user", "assistant", "user"], follow_up
    for p in prompts:
        urls = [
            part["image_url"]["url"]
            for m in p.messages
            if isinstance(m["content"], list)
            for part in m["content"]
            if part["type"] == "image_url"
        ]
        assert len(urls) == p.images, p.name
        for url in urls:  # PNG pixels only: no DICOM header (and so no identifier) is sent
            assert url.startswith("data:image/png;base64,"), url[:40]
            img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            assert img.format == "PNG" and min(img.size) >= 64, img
    ct, mr = (prompts[2].messages[1]["content"][i]["image_url"]["url"] for i in (1, 2))
    assert ct != mr


def test_a_server_that_takes_four_images_also_gets_ct_slices() -> None:
    """The ct-volume prompt: VOLUME_SLICES phantom slices by the CT recipe (JPEG pixels and
    "SLICE n" text, nothing of the DICOM header), only where the config takes that many."""
    import json as json_

    from serve.pacs.phantom import PATIENT_ID, PATIENT_NAME
    from serve.verify.prompts import VOLUME_SLICES

    assert [p.name for p in fixed_prompts(VOLUME_SLICES - 1)][-1] == "follow-up"
    volume = fixed_prompts(VOLUME_SLICES)[-1]
    assert (volume.name, volume.images) == ("ct-volume", VOLUME_SLICES)
    parts = [
        part for m in volume.messages if isinstance(m["content"], list) for part in m["content"]
    ]
    urls = [part["image_url"]["url"] for part in parts if part["type"] == "image_url"]
    assert len(urls) == VOLUME_SLICES and all(u.startswith("data:image/jpeg") for u in urls)
    assert len(set(urls)) == VOLUME_SLICES, "four different slices"
    text = json_.dumps([part for part in parts if part["type"] == "text"])
    assert f"SLICE {VOLUME_SLICES}" in text and PATIENT_NAME not in text and PATIENT_ID not in text


def test_parse_reads_token_ids_and_keeps_the_chosen_token() -> None:
    response = {
        "choices": [
            {
                "logprobs": {
                    "content": [
                        {
                            "token": "token_id:7",
                            "logprob": -0.1,
                            "top_logprobs": [
                                {"token": "token_id:7", "logprob": -0.1},
                                {"token": "token_id:3", "logprob": -2.5},
                            ],
                        },
                        {
                            "token": "token_id:9",
                            "logprob": -4.0,
                            "top_logprobs": [{"token": "token_id:1", "logprob": -0.2}],
                        },
                    ]
                }
            }
        ],
        "prompt_token_ids": [2, 4],
    }
    g = parse(response)
    assert g.token_ids == [7, 9] and g.prompt_token_ids == [2, 4]
    assert g.logprobs == [{7: -0.1, 3: -2.5}, {1: -0.2, 9: -4.0}]
    with pytest.raises(ServedError, match="not token_id:N"):
        parse({"choices": [{"logprobs": {"content": [{"token": "the", "logprob": 0.0}]}}]})


def fake_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["x"]}))
    return folder


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (out, err)
    assert "Traceback" not in out + err
    return lines[0]


def test_unreachable_server_is_one_line(tmp_path, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    argv = [
        "--config",
        CONFIG,
        "--base-url",
        url,
        "--reference-model",
        str(fake_model(tmp_path / "m")),
    ]
    assert cli.main(argv) == 2
    assert f"cannot reach the server at {url}" in error_line(capsys)


def test_missing_reference_folder_is_one_line(tmp_path, capsys) -> None:
    argv = ["--config", CONFIG, "--reference-model", str(tmp_path / "nowhere")]
    assert cli.main(argv) == 2
    assert (
        error_line(capsys) == f"error: reference model folder {tmp_path / 'nowhere'} does not exist"
    )


def test_a_server_serving_another_model_is_one_line(tmp_path, capsys) -> None:
    folder = fake_model(tmp_path / "m")
    with serve_fake_openai() as (url, handler):
        handler.models = ["medgemma-4b-it", "other"]
        argv = ["--config", CONFIG, "--base-url", url, "--reference-model", str(folder)]
        assert cli.main(argv) == 2
    assert error_line(capsys) == (
        f"error: the server at {url} serves ['medgemma-4b-it', 'other'], not tiny-medgemma-verify"
    )


def test_hub_model_not_in_the_cache_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["--config", str(CONFIGS / "medgemma-4b-it.yaml")]
    assert cli.main(argv) == 2
    assert error_line(capsys) == (
        "error: google/medgemma-4b-it is not in the local Hugging Face cache; pass "
        "--reference-model DIR with a local copy of the weights"
    )


def test_the_reference_is_the_cached_snapshot_of_the_pinned_revision(
    tmp_path, capsys, monkeypatch
) -> None:
    """A hub config's `revision:` picks the same files for the reference as for the server
    (vLLM's --revision), not whatever the cache's `main` points to; an uncached revision is
    one line naming it."""
    import huggingface_hub.constants

    pinned, newer, missing = "a" * 40, "b" * 40, "c" * 40
    repo = tmp_path / "hub" / "models--google--medgemma-1.5-4b-it"
    (repo / "snapshots").mkdir(parents=True)
    for sha in (pinned, newer):
        fake_model(repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(newer)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    config = CONFIGS / "medgemma-1.5-4b-it.yaml"
    cfg = cli.load_config(config, [f"revision={pinned}"])
    assert cli.reference_folder(cfg, None) == repo / "snapshots" / pinned
    assert cli.reference_folder(cli.load_config(config), None) == repo / "snapshots" / newer
    assert cli.main(["--config", str(config), "--set", f"revision={missing}"]) == 2
    assert error_line(capsys) == (
        f"error: google/medgemma-1.5-4b-it at revision {missing} is not in the local Hugging "
        "Face cache; pass --reference-model DIR with a local copy of the weights"
    )


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [("--top-k", "0", "--top-k must be at least 1"), ("--tolerance", "-1", "must not be negative")],
)
def test_bad_numbers_are_one_line(tmp_path, capsys, flag, value, words) -> None:
    argv = ["--config", CONFIG, "--reference-model", str(tmp_path), flag, value]
    assert cli.main(argv) == 2
    assert words in error_line(capsys)


def test_bad_config_is_one_line(tmp_path, capsys) -> None:
    assert cli.main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in error_line(capsys)


def test_files_the_config_names_are_checked_by_the_preflight(tmp_path, capsys) -> None:
    model = tmp_path / "no-such-model"
    argv = ["--config", CONFIG, "--set", f"model={model}", "--set", "lora=null"]
    assert cli.main(argv) == 2
    _out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"error: {CONFIG}: invalid deployment config",
        f"  (top level): model: local path {str(model)!r} does not exist or is not a folder",
    ], err
