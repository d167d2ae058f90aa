"""The exceptions this package raises: one base class and one subclass per kind of refusal."""

from __future__ import annotations

import json


class RunnelError(Exception):
    """Anything that went wrong talking to a hub.

    ``status`` is the HTTP status when the hub answered, ``code`` and ``message`` the hub's
    own error code and text (``{"error": {"code", "message"}}``) when it sent them.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class AuthError(RunnelError):
    """401: credentials missing, invalid or expired. Never retried."""


class ForbiddenError(RunnelError):
    """403: valid credentials that may not do this. Never retried."""


class BadRequestError(RunnelError):
    """The hub refused the request itself (400, 404, 405, 409, 413, 415, ...). Never retried."""


class UnavailableError(RunnelError):
    """The hub could not be reached, or asked to come back later (429, 503).

    ``retry_after`` holds the hub's ``Retry-After`` in seconds when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class ProtocolError(RunnelError):
    """The hub's answer was not what its API promises."""


def error_from_response(status: int, body: bytes, retry_after: str | None = None) -> RunnelError:
    """The exception for a non-2xx answer, with the hub's code and message when present."""
    code: str | None = None
    message = f"HTTP {status}"
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        if isinstance(err.get("code"), str):
            code = err["code"]
        if isinstance(err.get("message"), str):
            message = err["message"]
    elif body:
        message = body[:200].decode("utf-8", "replace")
    if status == 401:
        return AuthError(message, status=status, code=code)
    if status == 403:
        return ForbiddenError(message, status=status, code=code)
    if status in (429, 502, 503, 504):
        after: float | None = None
        if retry_after is not None:
            try:
                after = float(retry_after)
            except ValueError:
                after = None
        return UnavailableError(message, status=status, code=code, retry_after=after)
    if 400 <= status < 500:
        return BadRequestError(message, status=status, code=code)
    return RunnelError(message, status=status, code=code)
