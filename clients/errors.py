"""The typed exceptions the client API raises on top of the openai SDK's own.

Server errors surface as the SDK's exceptions (AuthenticationError, BadRequestError,
APIStatusError...). Only a few cases get a type of their own: input that is not a usable
image (or a study that cannot become slices), a server that cannot be reached (the SDK's
APIConnectionError with the URL and how to start the server in the message), a structured
answer that does not match its schema, and a PACS that cannot be reached.
"""

from __future__ import annotations

import openai


class ImageError(ValueError):
    """An input that cannot become an image part: missing, not an image, undecodable
    DICOM, no pixel data, too large to decode safely. The message names the input."""


class StudyError(ImageError):
    """A study or series that cannot become slices: no image series, inconsistent geometry,
    duplicate positions, too many images for the server, a tag that may identify the patient."""


class ServerUnreachableError(openai.APIConnectionError):
    """The server at base_url could not be reached (connection refused, DNS, timeout)."""


class SchemaError(ValueError):
    """The model's answer is not JSON matching the requested schema; `raw` holds the text."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


class PacsError(RuntimeError):
    """A PACS cannot be reached, refuses a request, or (the local one) cannot be started;
    the message is one line naming the problem."""
