"""clients.messages and clients.tasks: message shapes and presets (no server)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clients.errors import SchemaError
from clients.messages import RADIOLOGIST, assistant_turn, build_messages, count_images, user_turn
from clients.tasks import TASKS, ConsistencyCheck, get_task, parse_answer
from tests.images import chest_like_png

IMG = chest_like_png(64)


def test_medgemma_format_system_then_text_then_images():
    msgs = build_messages("Describe this X-ray", [IMG, np.zeros((8, 8))], system=RADIOLOGIST)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == "You are an expert radiologist."
    parts = msgs[1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"], parts
    assert parts[0]["text"] == "Describe this X-ray"
    assert all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in parts[1:])
    json.dumps(msgs)  # plain JSON, ready for the SDK


def test_no_system_and_text_only():
    assert build_messages("hello") == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]}
    ]


def test_history_goes_between_system_and_the_new_turn():
    history = [user_turn("first", [IMG]), assistant_turn("an answer")]
    msgs = build_messages("and now?", system="S", history=history)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[-1]["content"][0]["text"] == "and now?"
    assert count_images(msgs) == 1


def test_a_single_image_may_be_given_bare_and_parts_pass_through():
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert build_messages("x", IMG)[0]["content"][1]["type"] == "image_url"
    assert build_messages("x", [part])[0]["content"][1] is part


def test_bad_history_is_named():
    with pytest.raises(ValueError, match=r"history\[1\]"):
        build_messages("x", history=[assistant_turn("ok"), {"role": "robot", "content": "?"}])


@pytest.mark.parametrize("name", ["findings", "summary", "interpret", "teaching", "consistency"])
def test_every_task_builds_a_request(name):
    req = TASKS[name].build([IMG], report="Normal chest.", patient_history="Cough for 3 weeks.")
    assert req.messages[0]["role"] == "system" and req.messages[0]["content"].startswith(
        RADIOLOGIST
    )
    assert req.params["max_tokens"] >= 300 and req.params["temperature"] == 0.0
    assert count_images(req.messages) == 1


def test_report_tasks_need_a_report_and_image_tasks_an_image():
    with pytest.raises(ValueError, match="'summary' needs the report"):
        TASKS["summary"].build([IMG])
    with pytest.raises(ValueError, match="'findings' needs at least one image"):
        TASKS["findings"].build([])


def test_interpret_is_multi_turn_with_patient_history():
    turns = [user_turn("What is this?", [IMG]), assistant_turn("A chest X-ray.")]
    req = TASKS["interpret"].build(
        question="Any effusion?", patient_history="65 y, smoker", turns=turns
    )
    assert "Patient history: 65 y, smoker" in req.messages[0]["content"]
    assert [m["role"] for m in req.messages] == ["system", "user", "assistant", "user"]
    assert req.messages[-1]["content"][0]["text"] == "Any effusion?"


def test_consistency_asks_for_json_schema_structured_output():
    req = TASKS["consistency"].build([IMG], report="No fracture.")
    fmt = req.params["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "ConsistencyCheck"
    schema = fmt["json_schema"]["schema"]
    assert set(schema["required"]) == {"consistent", "discrepancies", "confidence"}
    assert schema["additionalProperties"] is False
    assert "No fracture." in req.messages[1]["content"][0]["text"]


def test_parse_answer_accepts_matching_json():
    check = parse_answer(
        '{"consistent":false,"discrepancies":["no fracture seen"],"confidence":0.7}',
        ConsistencyCheck,
    )
    assert check == ConsistencyCheck(
        consistent=False, discrepancies=["no fracture seen"], confidence=0.7
    )


@pytest.mark.parametrize(
    "raw, where",
    [
        ('{"consistent": true, "discrepancies": [], "confidence": 1.5}', "confidence"),
        ('{"consistent": "maybe", "discrepancies": [], "confidence": 0.5}', "consistent"),
        ('{"consistent": true, "confidence": 0.5}', "discrepancies"),
        ('{"consistent": true, "discrepancies": [], "confidence": 0.5, "x": 1}', "x"),
        ('{"consistent": true, "discrep', "(root)"),
        ("", "(root)"),
    ],
)
def test_parse_answer_rejects_json_that_does_not_match(raw, where):
    with pytest.raises(
        SchemaError, match=rf"ConsistencyCheck: {__import__('re').escape(where)}"
    ) as err:
        parse_answer(raw, ConsistencyCheck)
    assert err.value.raw == raw


def test_get_task_takes_a_name_or_a_preset_and_lists_the_known_names():
    assert get_task("findings") is TASKS["findings"]
    assert get_task(TASKS["teaching"]) is TASKS["teaching"]
    with pytest.raises(KeyError, match="unknown task 'diagnose'; known: findings, summary"):
        get_task("diagnose")
