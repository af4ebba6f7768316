"""The whole-slide recipe's pure parts (clients.slide, clients.slide_client's fitting and
layout) on the real synthetic slide of `make pacs` (serve.pacs.slide): its levels from the
metadata a PACS returns, the level nearest 10X, the 896 px grid, the tissue test on the
frames' own JPEG bytes, the spatial order, the cap and the server's limits."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from io import BytesIO

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from clients.errors import StudyError
from clients.limits import SERVER, LimitError, Limits
from clients.slide import (
    MAX_PATCHES,
    PATCH,
    Level,
    SlideSent,
    cell_luminance,
    choose_level,
    is_tissue,
    patch_cells,
    slide_levels,
    spread,
    tissue_cells,
)
from clients.slide_client import fit_patches, slide_turn
from clients.slide_tiles import (
    all_frames,
    decode_frame,
    frames_for,
    patch_pixels,
    whole_level,
)
from serve.pacs import slide
from serve.pacs.phantom import PhantomSpec, phantom_series


@pytest.fixture(scope="module")
def pyramid() -> list[Dataset]:
    return slide.slide_pyramid(slide.SLIDE)


def metadata(datasets: list[Dataset]) -> list[Dataset]:
    """What WADO-RS metadata holds: the attributes without the pixels (DICOM JSON round
    trip, as the client reads them)."""
    out = []
    for ds in datasets:
        head = copy.deepcopy(ds)
        del head.PixelData
        out.append(Dataset.from_json(head.to_json_dict()))
    return out


def frames_of(ds: Dataset, level: Level, numbers: list[int]) -> dict[int, np.ndarray]:
    """The frames as a PACS sends them (as stored: JPEG), decoded by the client."""
    stored = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    return {n: decode_frame(stored[n - 1], level) for n in numbers}


def level_spec(columns: int, spacing: float | None, tile: int = 512) -> Level:
    rows = columns * 3 // 4
    frames = math.ceil(columns / tile) * math.ceil(rows / tile)
    return Level("st", "se", f"sop-{columns}", columns, rows, tile, tile, frames, spacing)


# --- levels and the level nearest 10X ------------------------------------------------------


def test_the_pyramid_is_read_from_its_metadata_highest_resolution_first(pyramid) -> None:
    levels = slide_levels(metadata(pyramid)[::-1])  # in any order from the PACS
    assert [lv.columns for lv in levels] == [7168, 3584, 1792]
    assert [lv.spacing_mm for lv in levels] == pytest.approx([0.0005, 0.001, 0.002])
    assert [lv.frames for lv in levels] == [154, 42, 12] and levels[0].positions is None
    chosen = choose_level(levels)
    assert (chosen.index, chosen.label, chosen.level.columns) == (1, "10X", 3584)


def test_the_nearest_level_is_by_ratio_and_a_tie_goes_to_the_finer() -> None:
    forty, twenty, five = (
        level_spec(c, s) for c, s in ((8000, 0.00025), (4000, 0.0005), (1000, 0.002))
    )
    # 40X is 4x finer than 10X, 5X 2x coarser: 5X is nearer
    assert choose_level([forty, five]).label == "5X"
    # 20X and 5X are both 2x away: the finer
    assert choose_level([twenty, five]).label == "20X"
    assert choose_level([level_spec(3000, 0.00102)]).label == "9.8X"


def test_a_missing_spacing_is_borrowed_else_the_base_level_is_used(pyramid) -> None:
    heads = metadata(pyramid)
    for ds in heads[1:]:  # only the base says its spacing
        del ds.SharedFunctionalGroupsSequence
        del ds.ImagedVolumeWidth
    levels = slide_levels(heads)
    assert [lv.spacing_mm for lv in levels] == pytest.approx([0.0005, 0.001, 0.002])
    assert choose_level(levels).label == "10X"
    del heads[0].SharedFunctionalGroupsSequence  # ImagedVolumeWidth / columns still says it
    assert choose_level(slide_levels(heads)).index == 1
    del heads[0].ImagedVolumeWidth
    chosen = choose_level(slide_levels(heads))
    assert (chosen.index, chosen.label) == (0, "base level, magnification unknown")


def test_a_study_that_is_not_a_slide_is_one_line(pyramid) -> None:
    ct = phantom_series(PhantomSpec(slices=2, size=32))
    with pytest.raises(StudyError, match=r"holds no whole-slide image .*; it holds CT$"):
        slide_levels(ct)
    with pytest.raises(StudyError, match="no whole-slide series 1.2.3"):
        slide_levels(metadata(pyramid), "1.2.3")


# --- the grid, the frames, the tissue test -------------------------------------------------


def test_the_grid_is_whole_patches_row_by_row_and_their_frames(pyramid) -> None:
    level = slide_levels(metadata(pyramid))[1]  # 3584 x 2688 in 512 px tiles, 7 across
    cells = patch_cells(level)
    assert cells == [(r, c) for r in range(3) for c in range(4)]
    assert frames_for(level, [(0, 0)]) == [1, 2, 8, 9]  # rows 0-1, columns 0-1 of tiles
    # rows 1792..2687 cross tile rows 3, 4 and 5 (896 is not a multiple of 512)
    assert frames_for(level, [(2, 3)]) == [27, 28, 34, 35, 41, 42]
    small = level_spec(1000, 0.001)  # 1000 x 750: one whole patch across, none down
    assert patch_cells(small) == []


def test_the_tissue_test_finds_the_drawn_tissue_and_no_more(pyramid) -> None:
    levels = slide_levels(metadata(pyramid))
    level, coarse = levels[1], levels[-1]
    frames = frames_of(pyramid[-1], coarse, all_frames(coarse))
    pixels = whole_level(coarse, frames)
    cells, whole = tissue_cells(pixels, coarse, level)
    assert whole == 12 and cells == sorted(slide.SLIDE.tissue), cells  # spatial order
    lumas = dict(
        zip(
            patch_cells(level),
            cell_luminance(pixels, coarse, level, patch_cells(level)),
            strict=True,
        )
    )
    assert (
        max(lumas[c] for c in cells) < 180 < 220 < min(lumas[c] for c in lumas if c not in cells)
    ), lumas
    blank = slide.slide_pyramid(slide.BLANK)
    blank_coarse = slide_levels(metadata(blank))[-1]
    glass = whole_level(blank_coarse, frames_of(blank[-1], blank_coarse, all_frames(blank_coarse)))
    assert tissue_cells(glass, blank_coarse, level) == ([], 12)


def test_the_tissue_threshold_is_ez_wsis() -> None:
    assert is_tissue(204.0) and not is_tissue(204.1)  # 0.8 x 255
    assert not is_tissue(0.0)  # black: not tissue either


def test_a_patch_is_the_10x_levels_pixels(pyramid) -> None:
    level = slide_levels(metadata(pyramid))[1]
    cell = (1, 2)
    frames = frames_of(pyramid[1], level, frames_for(level, [cell]))
    patch = patch_pixels(level, frames, cell)
    drawn = slide.picture_10x(slide.SLIDE)[PATCH : 2 * PATCH, 2 * PATCH : 3 * PATCH]
    assert patch.shape == (PATCH, PATCH, 3)
    assert np.abs(patch.astype(int) - drawn).mean() < 4  # JPEG's loss only


def test_frames_decode_as_stored_jpeg_or_raw_and_else_one_line() -> None:
    level = level_spec(1024, 0.001, tile=4)
    raw = bytes(range(48))
    assert decode_frame(raw, level).shape == (4, 4, 3)
    buf = BytesIO()
    Image.new("RGB", (4, 4), (200, 100, 150)).save(buf, "JPEG")
    assert decode_frame(buf.getvalue(), level)[0, 0] == pytest.approx([200, 100, 150], abs=3)
    with pytest.raises(StudyError, match="cannot be decoded"):
        decode_frame(b"not a frame", level)


def test_a_sparse_level_places_its_frames_by_position() -> None:
    positions = ((0, 0), (0, 4), (4, 4))  # (row, column) of each frame; (4, 0) is missing
    level = replace(level_spec(8, 0.001, tile=4), rows=8, frames=3, positions=positions)
    frames = {n: np.full((4, 4, 3), 10 * n, np.uint8) for n in (1, 2, 3)}
    assert [level.frame_at(ty, tx) for ty, tx in ((0, 0), (0, 1), (1, 0), (1, 1))] == [
        1,
        2,
        None,
        3,
    ]
    pixels = whole_level(level, frames)
    assert pixels[0, 0, 0] == 10 and pixels[0, 4, 0] == 20 and pixels[4, 4, 0] == 30
    assert pixels[4, 0, 0] == 255  # no frame there: glass


# --- order, cap, limits, layout ------------------------------------------------------------


def test_a_smaller_cap_spreads_over_the_tissue_in_spatial_order() -> None:
    cells = sorted(slide.SLIDE.tissue)
    assert spread(cells, 7) == cells
    assert spread(cells, 3) == [cells[0], cells[3], cells[6]]
    assert spread(cells, 1) == [cells[3]]


def test_the_patches_are_capped_by_the_recipe_then_the_server() -> None:
    texts, unlimited = ["Describe this slide."], Limits()
    assert fit_patches(7, None, unlimited, texts=texts, max_tokens=300).count == 7
    capped = fit_patches(300, None, unlimited, texts=texts, max_tokens=300)
    assert (capped.count, capped.reason) == (MAX_PATCHES, "the recipe's cap of 125 patches")
    two = fit_patches(7, None, Limits(2, 4096, SERVER), texts=texts, max_tokens=300)
    assert (two.count, two.reason) == (2, "the server takes at most 2 images per prompt")
    context = fit_patches(125, None, Limits(128, 8192, SERVER), texts=texts, max_tokens=300)
    # (8192 - ~24 of text - 300) // (256 + 12 a patch)
    assert context.count == 29 and "max_model_len" in context.reason, context
    assert fit_patches(7, 3, unlimited, texts=texts, max_tokens=0).reason == "--max-slices 3"
    with pytest.raises(LimitError, match="takes no images"):
        fit_patches(7, None, Limits(0, 4096, SERVER), texts=texts, max_tokens=300)


def test_the_turn_is_the_text_then_the_patches_the_same_bytes_each_time() -> None:
    patches = [np.full((PATCH, PATCH, 3), v, np.uint8) for v in (120, 160)]
    turn = slide_turn("Describe this slide.", patches, 896)
    kinds = [p["type"] for p in turn["content"]]
    assert turn["role"] == "user" and kinds == ["text", "image_url", "image_url"]
    assert turn["content"][0]["text"] == "Describe this slide."
    assert slide_turn("Describe this slide.", patches, 896) == turn


def test_the_sent_line_names_what_was_sent_and_why() -> None:
    sent = SlideSent("1.2.3", "1.2.3.4", 1, (3584, 2688), "10X", 7, ((0, 0), (1, 2)), "why")
    assert sent.line() == (
        "sent 2 of 7 patches (10X): why; series 1.2.3, level 1 (3584 x 2688 px), patches "
        "(row,col) 0,0 1,2"
    )
