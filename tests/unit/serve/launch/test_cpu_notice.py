"""The CPU image-attention notice the launcher prints (docs/fidelity.md)."""

from __future__ import annotations

import pytest

from serve.host import IMAGE_ATTENTION_NOTICE, image_attention_notice


@pytest.mark.parametrize(
    ("device", "limits", "printed"),
    [
        ("cpu", {"image": 2}, True),
        ("cpu", {"image": 0}, False),
        ("cpu", {}, False),
        ("cuda", {"image": 2}, False),
    ],
)
def test_notice_only_for_images_on_the_cpu(
    device: str, limits: dict[str, int], printed: bool
) -> None:
    assert image_attention_notice(device, limits) == (IMAGE_ATTENTION_NOTICE if printed else None)
