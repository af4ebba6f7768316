"""clients.recipes through clients.study: which recipe a series gets, the notebook's 85 of a
longer CT, MR scaled over the slices sent, JPEG data URLs that are the same bytes for the
same study (vLLM's prefix cache hashes them), and one user turn in the notebook's order."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from pydicom.dataset import Dataset

from clients.recipes import CT_VOLUME, MR_VOLUME, RADIOGRAPH, choose_recipe, recipe_indices
from clients.series import choose_series, group_series
from clients.study import build_study_messages
from clients.windows import volume_scale
from serve.pacs.phantom import PhantomSpec, phantom_series
from tests.studies import SPEC, bundled, images, texts

LONG = PhantomSpec(slices=120, size=32, slice_mm=2.5, noise_hu=5.0)


def series_of(datasets: list[Dataset]):
    return choose_series(group_series(datasets))


def as_mr(datasets: list[Dataset]) -> list[Dataset]:
    for ds in datasets:
        ds.Modality = "MR"
    return datasets


def test_the_recipe_follows_the_series():
    assert choose_recipe(series_of(phantom_series(SPEC))) is CT_VOLUME
    assert choose_recipe(series_of(as_mr(phantom_series(SPEC)))) is MR_VOLUME
    dx = bundled("CT_small.dcm")
    dx.Modality = "DX"
    assert choose_recipe(series_of([dx])) is RADIOGRAPH
    assert choose_recipe(series_of([bundled("CT_small.dcm")])) is RADIOGRAPH  # one image


def test_the_notebooks_85_of_a_longer_series_start_at_i_1():
    idx = recipe_indices(120)
    assert len(idx) == 85 and idx[-1] == 119 and idx[0] == 1, idx
    assert idx == [int(round(i / 85 * 119)) for i in range(1, 86)]
    assert len(set(idx)) == 85 and idx == sorted(idx)
    assert recipe_indices(40) == list(range(40))


def test_a_ct_volume_is_85_jpeg_slices_in_one_user_turn_instruction_first():
    messages, sent = build_study_messages(phantom_series(LONG), "Describe this CT study")
    assert [m["role"] for m in messages] == ["user"], messages[0]["role"]
    parts = messages[0]["content"]
    assert parts[0] == {"type": "text", "text": CT_VOLUME.instruction}
    assert "abdomen" not in CT_VOLUME.instruction and "CT slices" in CT_VOLUME.instruction
    assert parts[-1] == {"type": "text", "text": "Describe this CT study"}
    kinds = [p["type"] if p["type"] == "image_url" else p["text"] for p in parts[1:-1]]
    assert kinds == [x for n in range(1, 86) for x in ("image_url", f"SLICE {n}")]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls)
    assert sent.indices == tuple(recipe_indices(120)) and sent.reason == "", sent
    assert sent.line().startswith("sent 85 of 120 slices (CT, 3 windows); series "), sent.line()


def test_fewer_slices_than_the_recipe_are_all_sent_and_said_so():
    _, sent = build_study_messages(phantom_series(SPEC), "q")
    assert sent.indices == tuple(range(25)), sent
    assert sent.line().startswith(
        "sent 25 of 25 slices (CT, 3 windows): the series has fewer than the recipe's 85: all sent"
    ), sent.line()


def test_the_same_study_gives_the_same_bytes_and_a_follow_up_shares_the_prefix():
    """vLLM's prefix cache hashes each image's content: a follow-up question on the same
    study must carry byte-identical data URLs and the same text before the question."""
    study = phantom_series(SPEC)
    first, _ = build_study_messages(study, "Any lesion?")
    again, _ = build_study_messages(copy.deepcopy(study), "Any lesion?")
    follow_up, _ = build_study_messages(copy.deepcopy(study), "How large is it?")
    assert json.dumps(first) == json.dumps(again)
    assert first[0]["content"][:-1] == follow_up[0]["content"][:-1]
    assert first[0]["content"][-1] != follow_up[0]["content"][-1]
    mr = as_mr(phantom_series(SPEC))
    assert json.dumps(build_study_messages(mr, "q")[0]) == json.dumps(
        build_study_messages(copy.deepcopy(mr), "q")[0]
    )


def test_mr_is_scaled_over_the_slices_sent_and_grey_in_r_g_b():
    mr = as_mr(phantom_series(SPEC))
    messages, sent = build_study_messages(mr, "q", max_size=None)
    assert (sent.window, sent.recipe) == ("volume", "MR, whole-volume scaling"), sent
    assert texts(messages)[0] == MR_VOLUME.instruction
    shown = images(messages)
    assert shown[0].shape == (SPEC.size, SPEC.size, 3)
    r, g, b = (shown[12][..., c].astype(int) for c in range(3))
    assert np.abs(r - g).max() <= 2 and np.abs(g - b).max() <= 2, "one channel in three"
    # one scale for the volume: the brightest slice reaches 255, not every slice
    assert max(int(img.max()) for img in shown) >= 250


@pytest.mark.parametrize(
    ("volume", "want"),
    [
        ([np.full((2, 2), 1), np.full((2, 2), 2), np.full((2, 2), 3)], [0, 128, 255]),
        ([np.zeros((2, 2))], [255]),  # max == min: 255, as Google's container
    ],
)
def test_volume_scale_is_the_serving_containers(volume, want):
    out = volume_scale(volume)
    assert [int(v[0, 0]) for v in out] == want and all(v.dtype == np.uint8 for v in out)
