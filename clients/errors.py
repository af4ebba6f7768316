"""The typed exceptions the client API raises on top of the openai SDK's own.

Server errors surface as the SDK's exceptions (AuthenticationError, BadRequestError,
APIStatusError...). Only three cases get a type of their own: input that is not a usable
image, a server that cannot be reached (the SDK's APIConnectionError with the URL and how
to start the server in the message), and a structured answer that does not match its schema.
"""

from __future__ import annotations

import openai


class ImageError(ValueError):
    """An input that cannot become an image part: missing, not an image, undecodable
    DICOM, no pixel data, too large to decode safely. The message names the input."""


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
