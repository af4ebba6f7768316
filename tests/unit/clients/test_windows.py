"""clients.windows through clients.study on the synthetic CT phantom and pydicom's bundled
files: each window's pixels, the CT notebook's three-window RGB, which modality may use which."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from clients.errors import StudyError
from clients.study import build_study_messages
from clients.windows import HU_WINDOWS, RGB_WINDOWS, window_frame
from serve.pacs.phantom import hu_volume, phantom_series
from tests.studies import SPEC, bundled, images, one_line


@pytest.fixture
def phantom() -> list[Dataset]:
    return phantom_series(SPEC)


# --- windows --------------------------------------------------------------------------------


def lesion_image(phantom: list[Dataset], window: str) -> tuple[np.ndarray, np.ndarray]:
    """The slice through the lesion's centre in this window, and the noiseless HU slice."""
    middle = SPEC.lesion_index
    messages, sent = build_study_messages(phantom, "q", budget=1, window=window, max_size=None)
    assert sent.indices == (middle,), sent.indices
    return images(messages)[0], hu_volume(SPEC)[sent.indices[0]]


def test_each_window_gives_a_different_image(phantom):
    shown = {w: lesion_image(phantom, w)[0] for w in ("rgb", *HU_WINDOWS)}
    names = list(shown)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.array_equal(shown[a], shown[b]), f"{a} and {b} look the same"


def test_rgb_is_three_different_windows_as_the_ct_notebook(phantom):
    middle = phantom[SPEC.lesion_index]  # the phantom arrives in order
    hu = hu_volume(SPEC)[SPEC.lesion_index]
    rgb = window_frame(middle, None, middle, "rgb")
    assert rgb.shape == (*hu.shape, 3) and rgb.dtype == np.uint8, rgb.shape
    r, g, b = (rgb[..., c].astype(int) for c in range(3))
    assert not np.array_equal(r, g) and not np.array_equal(g, b) and not np.array_equal(r, b)
    # The notebook's norm: clip, scale to 0..255, np.round (half to even); exactly.
    for c, (low, high) in enumerate(RGB_WINDOWS):
        want = np.round((np.clip(hu, low, high) - low) / (high - low) * 255)
        assert np.array_equal(rgb[..., c], want.astype(np.uint8)), f"channel {c}"
    sent, _ = lesion_image(phantom, "rgb")  # the recipe's JPEG (quality 75) of those pixels
    assert sent.shape == rgb.shape and np.abs(sent.astype(int) - rgb).mean() < 4.0


def test_the_lesion_stands_out_in_the_soft_tissue_window(phantom):
    soft, hu = lesion_image(phantom, "soft-tissue")
    lung, _ = lesion_image(phantom, "lung")
    lesion, water = hu == SPEC.lesion_hu, hu == 0
    assert lesion.sum() > 10, "the slice misses the lesion"

    def contrast(img: np.ndarray) -> float:
        return float(img[lesion].mean() - img[water].mean())

    # +60 HU over water in W400/L40: 38 grey levels; in W1500/L-600 only 10.
    assert contrast(soft) > 30 and contrast(soft) > 3 * contrast(lung), (
        contrast(soft),
        contrast(lung),
    )


def test_mr_uses_the_files_window_and_refuses_hounsfield_windows():
    mr = bundled("MR_small.dcm")
    messages, sent = build_study_messages([mr], "q")
    assert sent.window == "voi" and images(messages)[0].ndim == 2
    for window in ("lung", "rgb"):
        with pytest.raises(StudyError, match=r"Hounsfield units.*MR: use --window voi") as exc:
            build_study_messages([mr], "q", window=window)
        one_line(exc)
    with pytest.raises(StudyError, match="unknown window 'liver'"):
        build_study_messages([bundled("CT_small.dcm")], "q", window="liver")
