"""Lab-report extraction, MedGemma 1.5's document workload, as a request and its typed answer.

MedGemma 1.5's model card lists "medical document understanding: extraction of structured
data, such as values and units, from unstructured medical lab reports" (a page image or a
PDF in, JSON out). No schema and no notebook recipe for it were found in
Google-Health/medgemma (searched for "lab" in the copy readable here, which predates the
1.5 notebooks; the issue names notebooks for the other 1.5 workloads and none for this):
the schema (LabReport) and the instruction (PROMPT) are ours.

- **The request**: one user turn, the page images in page order, then the instruction with
  the schema's shape (keys and value types: the JSON Schema itself cost the stand-in's
  tokenizer about 2,000 tokens, more than the pages); no system prompt (as the 1.5
  notebooks send theirs), greedy, 2048 new tokens (room for about 30 results). Each page
  is at most 896 px, grey PNG (clients.pages renders a PDF).
- **Several pages go in one prompt**, not one request each: a report prints its specimen
  and collection time once, on page 1, and a results table runs over onto page 2; only a
  prompt holding both can attribute them, and one answer is one schema check. The pages
  must fit the server's images per prompt (limit_mm_per_prompt) and context, as learned
  from /v1/models (clients.limits): a document with more pages is refused by name before
  anything is sent, and --page N (repeatable) sends a subset.
- **Structured output**: `response_format` json_schema from LabReport (vLLM's xgrammar
  constrains the decoding to it, as for the consistency task). `constrained=False` sends
  none, for a server without structured output; the answer is then read as the 1.5
  notebooks read theirs: after a thinking trace (`<unused94>` ... `<unused95>`), inside a
  ```json fence when there is one.
- **Privacy**: the schema has no field for the patient (name, identifiers, birth date) and
  the instruction says to leave them out: the JSON carries results, not who they are of.

An answer that is not a LabReport raises LabReportError, holding the whole raw answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clients.boxes import FENCE, FENCE_END, THINKING_END, after_thinking
from clients.errors import SchemaError
from clients.images import DEFAULT_MAX_SIZE, data_url, encode_image
from clients.limits import Limits, fit_slices, text_tokens
from clients.pages import DocumentError, DocumentSource, Page, choose_pages, read_document
from clients.results import ChatResult
from clients.tasks import TaskRequest, response_format

LAB_REPORT = "lab-report"  # the task's name (chat --task, batch --task)
MAX_NEW_TOKENS = 2048
THINKING_START = "<unused94>"
NOT_A_REPORT = "the answer does not match the lab-report schema (LabReport)"


class LabResult(BaseModel):
    """One test result as the report prints it."""

    model_config = ConfigDict(extra="forbid")

    test_name: str = Field(description="The test's name as printed, e.g. 'Potassium'.")
    result: str = Field(
        description="The result as printed, qualifiers kept: '5.9', '<5', 'Negative'."
    )
    unit: str | None = Field(description="Its unit as printed ('mmol/L'); null when none.")
    reference_range: str | None = Field(
        description="Its reference range as printed ('3.5-5.1', '<5'); null when none."
    )
    flag: str | None = Field(
        description="An abnormal flag printed with it ('H', 'L', '*'); null when none."
    )
    specimen: str | None = Field(
        description="Its specimen ('Serum', 'Urine') when the report gives one for this "
        "result; null when only the report's applies."
    )
    collection_time: str | None = Field(
        description="When its specimen was collected, as printed, when the report gives it "
        "for this result; null when only the report's applies."
    )


class LabReport(BaseModel):
    """A lab report's results and the fields it prints once for all of them (no patient)."""

    model_config = ConfigDict(extra="forbid")

    laboratory: str | None = Field(description="The laboratory's name as printed; null if none.")
    specimen: str | None = Field(
        description="The specimen printed for the whole report ('Serum'); null if none."
    )
    collection_time: str | None = Field(
        description="When the report's specimen was collected, as printed; null if not shown."
    )
    report_time: str | None = Field(
        description="When the report was issued, as printed; null if not shown."
    )
    results: list[LabResult] = Field(description="Every test result shown, in reading order.")


PROMPT = (  # ours: no recipe was found (module doc)
    "{what} a laboratory report. Extract every test result it shows: for each, the test "
    "name, the result, its unit, its reference range and any abnormal flag, and its "
    "specimen and collection time when they are given for that result. Also give the "
    "laboratory's name and the specimen, collection time and report time printed for the "
    "whole report. Copy every value exactly as printed; use null for anything the report "
    "does not show. Leave out the patient's name and identifiers."
    "\n\nAnswer with JSON only, in this shape: {shape}"
)


def shape(model: type[BaseModel]) -> str:
    """The model's JSON as keys and value types, e.g. {"unit": string or null, ...}: the
    schema in a tenth of its JSON Schema's tokens (the instruction says what each means;
    structured output enforces the rest)."""
    fields = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if get_origin(kind) is list:
            (item,) = get_args(kind)
            text = f"[{shape(item)}, ...]"
        else:
            types = [t for t in get_args(kind) if t is not type(None)] or [kind]
            text = "string" if types == [str] else str(types)
            text += " or null" if type(None) in get_args(kind) else ""
        fields.append(f'"{name}": {text}')
    return "{" + ", ".join(fields) + "}"


def lab_prompt(pages: int) -> str:
    """The instruction for a report of `pages` page images."""
    what = "This image is" if pages == 1 else f"These {pages} images are the pages, in order, of"
    return PROMPT.format(what=what, shape=shape(LabReport))


@dataclass(frozen=True)
class LabReportTask:
    """Lab-report extraction as a batch task (`batch --task lab-report`): each PDF or page
    image under the folder is one report."""

    name: str = LAB_REPORT
    needs_report: bool = False


class LabReportError(SchemaError):
    """An answer that is not a LabReport; `raw` holds the model's whole answer."""


@dataclass(frozen=True)
class LabRequest:
    """A lab report's request and what it carries."""

    request: TaskRequest
    where: str
    pages: tuple[int, ...]  # the page numbers sent, from 1
    total: int  # pages in the document

    def line(self) -> str:
        """What stderr says: "sent pages 1, 2 of 2 of report.pdf in one prompt (lab report)"."""
        which = "page" if len(self.pages) == 1 else "pages"
        numbers = ", ".join(map(str, self.pages))
        return f"sent {which} {numbers} of {self.total} of {self.where} in one prompt (lab report)"


def page_part(page: Page, max_size: int | None) -> dict[str, Any]:
    url = data_url(*encode_image(page.image, max_size=max_size))
    return {"type": "image_url", "image_url": {"url": url}}


def pages_request(
    pages: Sequence[Page],
    *,
    max_tokens: int | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
    constrained: bool = True,
) -> TaskRequest:
    """One user turn: the page images in order, then the instruction (pure)."""
    content = [page_part(page, max_size) for page in pages]
    content.append({"type": "text", "text": lab_prompt(len(pages))})
    params: dict[str, Any] = {"max_tokens": max_tokens or MAX_NEW_TOKENS, "temperature": 0.0}
    if constrained:
        params["response_format"] = response_format(LabReport)
    return TaskRequest([{"role": "user", "content": content}], params)


def lab_report_request(
    document: DocumentSource | Sequence[DocumentSource],
    *,
    pages: Sequence[int] | None = None,
    pdf: bool | None = None,
    limits: Limits | Callable[[], Limits] | None = None,
    max_tokens: int | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
    constrained: bool = True,
) -> LabRequest:
    """Read the document (clients.pages.read_document), choose its pages, check they fit the
    server's limits, render them, and build the request. Nothing is sent here. Raises
    DocumentError (not a PDF, no such page, a blank page, too many pages), ImageError,
    LimitError (not one image fits)."""
    doc = read_document(document, pdf=pdf)
    numbers = choose_pages(doc.total, pages, doc.where)
    tokens = max_tokens or MAX_NEW_TOKENS
    known = (limits() if callable(limits) else limits) or Limits()
    fit = fit_slices(len(numbers), known, text=text_tokens([lab_prompt(2)]), max_tokens=tokens)
    if fit.count < len(numbers):
        raise DocumentError(
            f"{doc.where}: {len(numbers)} pages do not fit one prompt ({fit.reason}): send at "
            f"most {fit.count} with --page N (repeatable); nothing sent"
        )
    chosen = doc.render(numbers)
    request = pages_request(chosen, max_tokens=tokens, max_size=max_size, constrained=constrained)
    return LabRequest(request, doc.where, tuple(numbers), doc.total)


def report_json(text: str) -> str:
    """The JSON of an answer: after a thinking trace, inside a ```json fence if any."""
    if THINKING_START in text and THINKING_END not in text:
        raise LabReportError(
            f"{NOT_A_REPORT}: its thinking trace never ends ({THINKING_START} without "
            f"{THINKING_END})",
            text,
        )
    answer = after_thinking(text).strip()
    start = answer.find(FENCE)
    if start != -1:
        end = answer.find(FENCE_END, start + len(FENCE))
        return answer[start + len(FENCE) : end if end != -1 else len(answer)].strip()
    return answer


def parse_lab_report(text: str, finish_reason: str | None = None) -> LabReport:
    """The answer as a LabReport. Raises LabReportError (`.raw` the whole answer) naming
    the first problem, and saying so when max_tokens cut the answer off."""
    try:
        return LabReport.model_validate_json(report_json(text))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        cut = "; the answer was cut off at max_tokens" if finish_reason == "length" else ""
        raise LabReportError(
            f"{NOT_A_REPORT}: {where}: {first['msg']} ({exc.error_count()} error(s){cut})", text
        ) from None


def read_answer(result: ChatResult) -> ChatResult:
    """The result with `.parsed` set to its LabReport. Raises LabReportError."""
    result.parsed = parse_lab_report(result.text, result.finish_reason)
    return result
