"""A prepared request (serialised JSON body), and the workload file the Locust process reads.

A workload is a list of sessions sent in turn: a session is the requests one simulated user
sends in order, one after the other. Most scenarios have sessions of one request; a study
asked follow-up questions (`prompts.follow_ups`) is one session: its first question, then
each follow-up on the same images. Kept free of heavy imports: the Locust process loads it
and nothing of the encoders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# What a request is within its session (records and the summary split by it):
FIRST = "first"  # a volume's first question: its slices not yet cached
FOLLOW_UP = "follow_up"  # a later question on the same volume: same slices and instruction
RADIOGRAPH = "radiograph"  # any question on a single radiograph (images.radiograph_share)
ROLES = (FIRST, FOLLOW_UP, RADIOGRAPH)


@dataclass(frozen=True)
class PreparedRequest:
    """One ready-to-send chat completion: its JSON body and what it carries."""

    body: bytes
    n_images: int
    kind: str  # "image", "dicom", "study" (a CT study of n_images slices), "radiograph", "text"
    task: str
    session: int = 0  # which session it belongs to (its index in the prepared workload)
    role: str = ""  # FIRST, FOLLOW_UP or RADIOGRAPH in a study scenario; "" otherwise

    def to_line(self) -> str:
        meta = {
            "kind": self.kind,
            "n_images": self.n_images,
            "task": self.task,
            "session": self.session,
            "role": self.role,
        }
        return json.dumps({**meta, "body": self.body.decode()}, separators=(",", ":"))

    @classmethod
    def from_line(cls, line: str) -> PreparedRequest:
        d = json.loads(line)
        return cls(d["body"].encode(), d["n_images"], d["kind"], d["task"], d["session"], d["role"])


def sessions(requests: list[PreparedRequest]) -> list[list[PreparedRequest]]:
    """The requests grouped into their sessions, in order (consecutive requests of one
    session id form one session)."""
    out: list[list[PreparedRequest]] = []
    for r in requests:
        if out and out[-1][0].session == r.session:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def write_workload(path: Path, requests: list[PreparedRequest]) -> None:
    with path.open("w") as f:
        for r in requests:
            f.write(r.to_line() + "\n")


def read_workload(path: Path) -> list[list[PreparedRequest]]:
    """The workload file's sessions, in order."""
    lines = path.read_text().splitlines()
    return sessions([PreparedRequest.from_line(ln) for ln in lines if ln.strip()])
