"""The one exception tree of rlm.

Every error a user or the model can act on is an RLMError: it carries a short
machine-readable ``type``, a message that says what happened and quotes the
value, and a ``hint`` that says how to fix it. The CLI turns any RLMError into
``{"error": {"type", "message", "hint"}}`` with exit status 1; everything else
is a bug and is reported as ``internal_error``.
"""
from __future__ import annotations


class RLMError(Exception):
    """Root of all rlm errors."""

    type = "rlm_error"
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, **details):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def to_json(self) -> dict:
        out = {"type": self.type, "message": self.message, "hint": self.hint}
        out.update({k: v for k, v in self.details.items() if _jsonable(v)})
        return out


def from_json(error: dict, default_type: str) -> RLMError:
    """An error the worker sent as ``to_json()``, rebuilt on the CLI's side (same type, message, hint)."""
    cls = SessionBusy if error.get("type") == "session_busy" else RLMError
    exc = cls(error.get("message") or default_type.replace("_", " "), error.get("hint"))
    exc.type = error.get("type") or default_type
    return exc


def _jsonable(value) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))


class UsageError(RLMError):
    """Bad command-line arguments (exit status 2)."""

    type = "usage_error"
    exit_code = 2


class ConfigError(RLMError):
    """The environment is not set up: no key, a bad variable, RLM_HOME unusable."""

    type = "config_error"


class InputError(RLMError):
    """A path, glob or value given by the user cannot be used."""

    type = "input_error"


class SessionError(RLMError):
    type = "session_error"


class InvalidSessionId(SessionError):
    type = "invalid_session_id"


class SessionExists(SessionError):
    type = "session_exists"


class SessionNotFound(SessionError):
    type = "session_not_found"


class SessionBusy(SessionError):
    type = "session_busy"


class NoFinal(SessionError):
    type = "no_final"


class WorkerError(RLMError):
    """The session's worker process could not be started or reached."""

    type = "worker_error"


class CheckpointError(RLMError):
    type = "checkpoint_error"


class LedgerError(RLMError):
    """The session's ledger database is missing, corrupt or unwritable."""

    type = "ledger_error"


class BudgetExceeded(RLMError):
    """A request was not sent because it could not fit in a spending limit."""

    type = "budget_exceeded"


class APIError(RLMError):
    """A Messages API request failed for good (after any retries).

    ``status`` is the HTTP status (None for connection errors and timeouts),
    ``api_type`` the API's own error type, ``request_id`` its request id,
    ``attempts`` how many were made, ``sent`` whether the last one reached the
    server without an answer coming back (so it may have been billed).
    """

    type = "api_error"

    def __init__(self, message, hint=None, *, status=None, api_type=None,
                 request_id=None, retryable=False, retry_after=None, sent=False, **details):
        super().__init__(message, hint, status=status, api_type=api_type,
                         request_id=request_id, **details)
        self.attempts = details.get("attempts", 1)
        self.sent = sent
        self.status = status
        self.api_type = api_type
        self.request_id = request_id
        self.retryable = retryable
        self.retry_after = retry_after


class BadRequestError(APIError):
    type = "bad_request"


class AuthenticationError(APIError):
    type = "authentication_error"


class BillingError(APIError):
    type = "billing_error"


class PermissionDeniedError(APIError):
    type = "permission_error"


class ModelNotFoundError(APIError):
    type = "not_found_error"


class RequestTooLargeError(APIError):
    type = "request_too_large"


class RateLimitError(APIError):
    type = "rate_limit_error"


class SpendLimitError(APIError):
    """The organisation's spend cap was reached: retrying cannot help."""

    type = "spend_limit_reached"


class OverloadedError(APIError):
    type = "overloaded_error"


class ServerError(APIError):
    type = "server_error"


class APIConnectionError(APIError):
    type = "connection_error"


class APITimeoutError(APIError):
    type = "timeout_error"


class BatchError(RLMError):
    """``llm_query_batch(errors="raise")``: some items failed.

    ``results`` holds every item in input order: the answer text for the items
    that succeeded and the ``[llm_query error ...]`` marker for the others.
    """

    type = "batch_error"

    def __init__(self, message, hint=None, *, results=None, failed=None):
        super().__init__(message, hint, failed=failed or [])
        self.results = results or []
        self.failed = failed or []
