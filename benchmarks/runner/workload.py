"""The requests of a run, generated and encoded once before any load is sent.

Images are synthetic (no patient data): i.i.d. noise like vLLM's random-mm dataset, a
grey radiograph-like picture, a whole slide's tissue patch (`serve.pacs.slide`), a 16-bit
DICOM dataset built in memory, or a CT study (the phantom series of `serve.pacs.phantom`).
They are turned into chat messages by the clients' own code (`clients.image_input.to_image_part`,
`clients.images.encode_jpeg` for a patch, `clients.study.build_study_messages`, and the
task presets through `serve.workload.messages.task_messages`), so the benchmark sends
what a client sends; this module is the runner's one user of `clients`' builders.
A CT scenario mixes studies with single radiographs (`images.radiograph_share`), and a
session asks its first question then each of `prompts.follow_ups` on the same images
(benchmarks.runner.followups). Each request body is serialised to JSON here, so the timed
path only writes bytes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from benchmarks.runner.followups import role_of, with_question
from benchmarks.runner.prepared import PreparedRequest
from benchmarks.runner.scenario import Scenario
from clients.image_input import to_image_part
from clients.images import data_url, encode_jpeg
from clients.study import build_study_messages
from serve.pacs.phantom import PhantomSpec, phantom_series
from serve.pacs.slide import tissue_patch
from serve.workload.messages import task_messages

SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")


def noise_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """i.i.d. random RGB pixels (worst case for compression), as vLLM's random-mm."""
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def xray_values(rng: np.random.Generator, width: int, height: int, top: int) -> np.ndarray:
    """A radiograph-like grey picture on 0..top: bright body, two dark lung fields, noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width / 2, height / 2
    body = np.exp(-(((x - cx) / (0.45 * width)) ** 6 + ((y - cy) / (0.55 * height)) ** 6))
    lungs = sum(
        np.exp(
            -(
                ((x - cx + s * 0.17 * width) / (0.12 * width)) ** 2
                + ((y - cy) / (0.3 * height)) ** 2
            )
        )
        for s in (-1, 1)
    )
    img = 0.75 * body - 0.45 * lungs + rng.normal(0, 0.03, (height, width))
    return np.clip(img * top, 0, top)


def dicom_dataset(rng: np.random.Generator, width: int, height: int) -> Dataset:
    """A 12-bit MONOCHROME2 secondary-capture DICOM with a window, built in memory."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.set_pixel_data(xray_values(rng, width, height, 4095).astype(np.uint16), "MONOCHROME2", 12)
    ds.WindowCenter = 1800
    ds.WindowWidth = 3000
    return ds


def image_part(rng: np.random.Generator, kind: str, scenario: Scenario, size: tuple[int, int]):
    """One encoded image_url part of the given kind ("image" uses scenario.images.kind)."""
    width, height = size
    max_size = scenario.images.max_size
    if kind == "dicom":
        return to_image_part(dicom_dataset(rng, width, height), max_size=max_size)
    if scenario.images.kind == "noise":
        return to_image_part(noise_image(rng, width, height), max_size=max_size)
    if scenario.images.kind == "slide":  # JPEG, as clients.slide_client sends a patch
        patch = tissue_patch(int(rng.integers(2**31)), width, height)
        url = data_url(*encode_jpeg(patch, max_size=max_size))
        return {"type": "image_url", "image_url": {"url": url}}
    return to_image_part(xray_values(rng, width, height, 255).astype(np.uint8), max_size=max_size)


def kinds(scenario: Scenario) -> list[str]:
    """The kind of each prepared session: exact shares, spread evenly (no randomness). A CT
    scenario's sessions are studies, `images.radiograph_share` of them radiographs."""
    n = scenario.images.distinct
    mix = scenario.images
    out = []
    for i in range(n):
        text_only = int((i + 1) * mix.text_only_share) > int(i * mix.text_only_share)
        j = i - int(i * mix.text_only_share)  # index among image requests
        dicom = int((j + 1) * mix.dicom_share) > int(j * mix.dicom_share)
        radiograph = int((j + 1) * mix.radiograph_share) > int(j * mix.radiograph_share)
        if mix.kind == "ct":
            image = "radiograph" if radiograph else "study"
        else:
            image = "dicom" if dicom else "image"
        out.append("text" if text_only else image)
    return out


def study_messages(
    scenario: Scenario, i: int, spec: PhantomSpec
) -> tuple[str, list[dict[str, Any]], dict[str, Any], str]:
    """(task name, messages, extra request fields, question) of the i-th request as a CT
    study: the task's system text and question (as `task_messages` words them for one
    image), with the phantom series laid out by clients.study (`per_request` slices, each
    then "SLICE n")."""
    placeholder = {"type": "image_url", "image_url": {"url": "data:,"}}  # replaced below
    task, messages, extra = task_messages(scenario, i, [placeholder])
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    question = "\n\n".join(p["text"] for p in messages[-1]["content"] if p["type"] == "text")
    study, _ = build_study_messages(
        phantom_series(spec),
        question,
        budget=scenario.images.per_request,
        system=system,
        max_size=scenario.images.max_size,
    )
    return task, study, extra, question


def last_question(messages: list[dict[str, Any]]) -> str:
    """The text of the last text part of the last message (the question a follow-up
    replaces)."""
    content = messages[-1]["content"]
    if isinstance(content, str):
        return content
    return next(p["text"] for p in reversed(content) if p["type"] == "text")


def request_body(
    scenario: Scenario, model: str, messages: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    """The chat completion body: streaming, with usage, fixed length if asked."""
    body: dict[str, Any] = {
        **extra,
        "model": model,
        "messages": messages,
        "max_tokens": scenario.max_tokens,
        "temperature": scenario.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if scenario.fixed_output:
        body["ignore_eos"] = True  # vLLM extra parameters, as `vllm bench serve --ignore-eos`
        body["min_tokens"] = scenario.max_tokens
    return body


def prepare(scenario: Scenario, model: str) -> list[PreparedRequest]:
    """Every distinct session of the run, encoded and serialised: each image request
    followed by its `prompts.follow_ups` (the same body with another question; roles set
    for a CT scenario or one with follow-ups), in order."""
    rng = np.random.default_rng(scenario.seed or 0)
    sizes = scenario.images.sizes
    out = []
    n_image_requests = 0
    seed = scenario.seed or 0
    roles = scenario.images.kind == "ct" or bool(scenario.prompts.follow_ups)
    for i, kind in enumerate(kinds(scenario)):
        if kind == "study":
            side = sizes[n_image_requests % len(sizes)][0]
            # a series of exactly per_request slices: all of it is sent (generating the
            # phantom's 60 slices to send 8 costs 5x the preparation, not the server)
            spec = PhantomSpec(
                slices=scenario.images.per_request, size=side, seed=seed + n_image_requests
            )
            n_image_requests += 1
            task, messages, extra, question = study_messages(scenario, i, spec)
            n_images = scenario.images.per_request
        else:
            parts = []
            if kind == "radiograph":  # one grey X-ray, as kind xray, of the first size
                xray = xray_values(rng, *sizes[0], 255).astype(np.uint8)
                parts.append(to_image_part(xray, max_size=scenario.images.max_size))
                n_image_requests += 1
            elif kind != "text":
                for _ in range(scenario.images.per_request):
                    size = sizes[n_image_requests % len(sizes)]
                    parts.append(image_part(rng, kind, scenario, size))
                n_image_requests += 1
            task, messages, extra = task_messages(scenario, i, parts)
            question, n_images = last_question(messages), len(parts)
        questions = [question] if kind == "text" else [question, *scenario.prompts.follow_ups]
        for q, text in enumerate(questions):
            asked = messages if q == 0 else with_question(messages, question, text)
            body = json.dumps(request_body(scenario, model, asked, extra), separators=(",", ":"))
            role = role_of(kind, q) if roles else ""
            out.append(PreparedRequest(body.encode(), n_images, kind, task, i, role))
    return out
