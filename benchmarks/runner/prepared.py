"""A prepared request (serialised JSON body), and the workload file the Locust process reads.

Kept free of heavy imports: the Locust process loads it and nothing of the encoders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PreparedRequest:
    """One ready-to-send chat completion: its JSON body and what it carries."""

    body: bytes
    n_images: int
    kind: str  # "image", "dicom", "study" (a CT study of n_images slices) or "text"
    task: str

    def to_line(self) -> str:
        meta = {"kind": self.kind, "n_images": self.n_images, "task": self.task}
        return json.dumps({**meta, "body": self.body.decode()}, separators=(",", ":"))

    @classmethod
    def from_line(cls, line: str) -> PreparedRequest:
        d = json.loads(line)
        return cls(d["body"].encode(), d["n_images"], d["kind"], d["task"])


def write_workload(path: Path, requests: list[PreparedRequest]) -> None:
    with path.open("w") as f:
        for r in requests:
            f.write(r.to_line() + "\n")


def read_workload(path: Path) -> list[PreparedRequest]:
    return [PreparedRequest.from_line(ln) for ln in path.read_text().splitlines() if ln.strip()]
