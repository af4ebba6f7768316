"""serve/paths.py: build_once builds a folder once, even when two ask for it at once."""

from __future__ import annotations

import threading
from pathlib import Path

from serve.paths import build_once


def write(folder: Path, text: str) -> None:
    folder.mkdir()
    (folder / "weights").write_text(text)
    (folder / ".complete").touch()


def test_a_second_caller_waits_for_the_build_in_progress_and_uses_it(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "model"
    building, release = threading.Event(), threading.Event()
    second_builds: list[Path] = []

    def first_build(tmp: Path) -> None:
        building.set()
        assert release.wait(30)
        write(tmp, "first")

    first = threading.Thread(target=build_once, args=(folder, first_build))
    first.start()
    assert building.wait(30)
    second = threading.Thread(target=build_once, args=(folder, second_builds.append))
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waiting for the first build, not building its own
    release.set()
    first.join(30)
    second.join(30)
    assert not second.is_alive()
    assert second_builds == []
    assert (folder / "weights").read_text() == "first"


def test_a_half_built_folder_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights").write_text("interrupted")
    assert build_once(folder, lambda tmp: write(tmp, "whole")) == folder
    assert (folder / "weights").read_text() == "whole"
    assert build_once(folder, lambda tmp: write(tmp, "again")) == folder  # built: kept
    assert (folder / "weights").read_text() == "whole"
