"""The patient's prior study for a comparison: `--prior auto` (QIDO-RS inside the client).

`find_prior(url, current)` asks the PACS (QIDO-RS) for the studies with the current study's
PatientID and modality dated up to the current study's date, and keeps the most recent one
strictly earlier than the current study (by StudyDate, then StudyTime), never the current
study itself. The PatientID travels only in that query to the PACS that already holds it:
it is never printed, logged, put in an error message or in a prompt; what comes back is a
StudyInstanceUID. `latest_before` is the pure choice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from clients.dicomweb import DEFAULT_TIMEOUT_S, STUDY_UID, connect, talking_to
from clients.errors import StudyError

STUDY_DATE, STUDY_TIME = "00080020", "00080030"
CHAT_ADVICE = "give --prior-study UID, or ask about the current study alone"
BATCH_ADVICE = "nothing to compare this study with (the batch goes on with the others)"


@dataclass(frozen=True)
class Dated:
    """A study and when it was made (DA, TM as DICOM writes them)."""

    study_uid: str
    date: str
    time: str = ""

    def key(self) -> tuple[str, str]:
        # TM may be HHMMSS.FFFFFF or shorter: left-aligned digits compare as times do
        return (self.date, self.time.ljust(13, "0"))


def dated(ds: Dataset) -> Dated:
    return Dated(
        str(ds.StudyInstanceUID), str(ds.get("StudyDate", "")), str(ds.get("StudyTime", ""))
    )


def latest_before(rows: Iterable[Dated], current: Dated) -> Dated | None:
    """The most recent study strictly before `current` (never itself); None if none is."""
    earlier = [r for r in rows if r.study_uid != current.study_uid and r.date]
    earlier = [r for r in earlier if r.key() < current.key()]
    return max(earlier, key=Dated.key, default=None)


def row_of(qido: dict[str, Any]) -> Dated | None:
    def first(tag: str) -> str:
        values = qido.get(tag, {}).get("Value", [])
        return str(values[0]) if values else ""

    uid = first(STUDY_UID)
    return Dated(uid, first(STUDY_DATE), first(STUDY_TIME)) if uid else None


def find_prior(
    url: str, current: Dataset, *, timeout_s: float = DEFAULT_TIMEOUT_S, advice: str = CHAT_ADVICE
) -> str:
    """The StudyInstanceUID of the patient's most recent earlier study of the current one's
    modality. Raises StudyError when there is none (its line ends with `advice`: what the
    user can do) or the current study says too little to search, PacsError when the PACS
    fails."""
    modality = str(current.get("Modality", ""))
    patient = str(current.get("PatientID", ""))
    now = dated(current)
    if not patient or not now.date:
        raise StudyError(
            "--prior auto needs the current study's PatientID and StudyDate, and it has "
            "not both: give --prior-study UID"
        )
    filters = {"PatientID": patient, "ModalitiesInStudy": modality, "StudyDate": f"-{now.date}"}
    with talking_to(url, "the search for the prior study"):
        found = connect(url, timeout_s).search_for_studies(
            fields=[STUDY_DATE, STUDY_TIME], search_filters=filters
        )
    rows = [r for r in map(row_of, found) if r is not None]
    prior = latest_before(rows, now)
    if prior is None:
        raise StudyError(
            f"--prior auto: the PACS at {url} holds no earlier {modality or 'image'} study of "
            f"this patient: {advice}"
        )
    return prior.study_uid
