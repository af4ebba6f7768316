"""Talk to a PACS over DICOMweb (dicomweb-client): fetch a study, search for studies.

`fetch_study(url, study_uid, series_uid=None)` retrieves the instances by WADO-RS in the
transfer syntax they are stored in (`transfer-syntax=*`): the PACS does not transcode, so
a JPEG 2000 or JPEG series arrives as stored and is decoded here by pydicom's plugins (a
syntax no installed plugin decodes is then one line from clients.dicom, where a PACS that
cannot transcode would answer a bare 500). `search_studies(url, modality=, since=)` is a
QIDO-RS study search kept to what a batch needs: StudyRef rows with the study's UID,
modalities and instance count. The search answer also carries the patient's name, id and
birth date, the study date and accession number: none of them is kept.

Errors are one line: a PACS that cannot be reached or answers with an error is PacsError
(naming the URL and status); an unknown study or series is StudyError (naming the UID).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset

from clients.errors import PacsError, StudyError

AS_STORED = (("application/dicom", "*"),)  # WADO-RS: every instance in its own syntax
DEFAULT_TIMEOUT_S = 60.0
# QIDO-RS attributes of a study result (DICOM JSON keys)
STUDY_UID, MODALITIES, INSTANCES = "0020000D", "00080061", "00201208"


@dataclass(frozen=True)
class StudyRef:
    """One study a search found: what a batch needs to fetch it, nothing about the patient."""

    study_uid: str
    modalities: tuple[str, ...] = ()
    instances: int | None = None


def connect(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> DICOMwebClient:
    """A DICOMweb client of the PACS at `url` (its DICOMweb base URL); no retries, so a PACS
    that is down fails at once."""
    web = DICOMwebClient(url, timeout=timeout_s)
    web.set_http_retry_params(retry=False)
    return web


def status_of(exc: requests.HTTPError) -> int | None:
    return exc.response.status_code if exc.response is not None else None


@contextmanager
def talking_to(url: str, what: str, not_found: str | None = None) -> Iterator[None]:
    """requests' errors of one DICOMweb call as one line: PacsError naming the URL, or
    StudyError(`not_found`) for a 404 when the call was about one study or series."""
    try:
        yield
    except requests.HTTPError as exc:
        status = status_of(exc)
        if status == 404 and not_found is not None:
            raise StudyError(not_found) from None
        raise PacsError(f"the PACS at {url} answered {status or '?'} to {what}") from None
    except requests.Timeout:
        raise PacsError(f"the PACS at {url} did not answer {what} in time") from None
    except (requests.ConnectionError, requests.exceptions.InvalidURL) as exc:
        reason = type(exc.__context__ or exc).__name__
        raise PacsError(
            f"cannot reach the PACS at {url} ({reason}): is the DICOMweb URL right and the "
            f"PACS running? (`python -m serve pacs` runs a local one)"
        ) from None
    except requests.exceptions.MissingSchema:
        raise PacsError(f"{url!r} is not a DICOMweb URL (http://host:port/dicom-web)") from None


def fetch_study(
    url: str,
    study_uid: str,
    series_uid: str | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Dataset]:
    """The instances of a study (or of one of its series) by WADO-RS, as stored.

    Raises StudyError for a study or series the PACS does not hold, PacsError otherwise."""
    if series_uid is None:
        what = f"the retrieval of study {study_uid}"
        missing = f"the PACS at {url} has no study {study_uid}"
    else:
        what = f"the retrieval of series {series_uid}"
        missing = f"the PACS at {url} has no series {series_uid} in study {study_uid}"
    with talking_to(url, what, missing):
        web = connect(url, timeout_s)
        if series_uid is None:
            datasets = web.retrieve_study(study_uid, media_types=AS_STORED)
        else:
            datasets = web.retrieve_series(study_uid, series_uid, media_types=AS_STORED)
    if not datasets:  # some PACS answer an unknown UID with an empty 200 / 204
        raise StudyError(missing)
    return list(datasets)


def parse_since(value: str) -> datetime.date:
    """A --since date: YYYY-MM-DD or YYYYMMDD (ValueError naming the value)."""
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"--since {value!r} is not a date: use YYYY-MM-DD")


def search_filters(modality: str | None, since: datetime.date | None) -> dict[str, str]:
    """QIDO-RS study search filters: ModalitiesInStudy, StudyDate as an open range (pure)."""
    filters = {}
    if modality:
        filters["ModalitiesInStudy"] = modality.upper()
    if since is not None:
        filters["StudyDate"] = f"{since:%Y%m%d}-"
    return filters


def study_ref(qido: dict[str, Any]) -> StudyRef:
    """One QIDO-RS study result (DICOM JSON) as a StudyRef; everything else is dropped."""

    def values(tag: str) -> list[Any]:
        return list(qido.get(tag, {}).get("Value", []))

    uid = values(STUDY_UID)
    if not uid:
        raise PacsError("the PACS returned a search result without a StudyInstanceUID")
    count = values(INSTANCES)
    return StudyRef(
        study_uid=str(uid[0]),
        modalities=tuple(str(m) for m in values(MODALITIES)),
        instances=int(count[0]) if count else None,
    )


def search_studies(
    url: str,
    modality: str | None = None,
    since: datetime.date | None = None,
    *,
    page: int = 100,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[StudyRef]:
    """Every study the PACS holds that matches, by QIDO-RS, page by page, in the PACS's
    order without duplicates. Raises PacsError."""
    filters = search_filters(modality, since)
    found: dict[str, StudyRef] = {}
    with talking_to(url, "the study search"):
        web = connect(url, timeout_s)
        offset = 0
        while True:
            rows = web.search_for_studies(
                fields=[MODALITIES, INSTANCES],
                search_filters=filters,
                offset=offset,
                limit=page,
            )
            for row in rows:
                ref = study_ref(row)
                found.setdefault(ref.study_uid, ref)
            if len(rows) < page:
                return list(found.values())
            offset += len(rows)
