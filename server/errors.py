"""Errors a client sees, in OpenAI's envelope.

Each error type maps to one HTTP status; `app.py` installs one handler for the
family. Messages say what is wrong and what to do, in one line.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

# Status label for a client that went away mid-request (nginx's convention; no response is sent).
CLIENT_CLOSED = "499"


class ApiError(Exception):
    status: int = 400
    type: str = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ApiError):
    status = 403
    type = "permission_error"


class NotFound(ApiError):
    status = 404
    type = "not_found_error"
    code = "model_not_found"


class Conflict(ApiError):
    status = 409
    code = "already_exists"


class PayloadTooLarge(ApiError):
    status = 413
    code = "context_length_exceeded"


class _RetryLater(ApiError):
    def __init__(self, message: str, *, retry_after_s: int, **kw):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class TooManyRequests(_RetryLater):
    status = 429
    type = "rate_limit_error"
    code = "queue_full"


class Unavailable(_RetryLater):
    status = 503
    type = "server_error"
    code = "unavailable"


class ServerError(ApiError):
    status = 500
    type = "server_error"
    code = "internal_error"


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


def schema_problem(errors: list[dict]) -> tuple[str, str]:
    """(field, what is wrong) for the first real problem of a request.

    A field of several types (a string or a list of strings, say) fails once per type; the
    "not a string" failure of a list says nothing. The problem is a failure of the branch the
    value's own type picked, so wrong-type failures come last when another exists, and the type
    tags pydantic puts into the location are dropped.
    """
    if not errors:
        return "body", "invalid request"
    relevant = [e for e in errors if not str(e.get("type", "")).endswith("_type")] or errors
    first = relevant[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _is_type_tag(p)]
    message = str(first.get("msg"))
    value = first.get("input")
    if isinstance(value, int | float) and not isinstance(value, bool):
        message += f" (got {value})"
    return ".".join(loc) or "body", message


def _is_type_tag(part) -> bool:
    # pydantic names a union branch in the location: "constrained-str", "list[constrained-int]", "str"
    return isinstance(part, str) and ("[" in part or part.startswith(("constrained-", "function-")) or part in (
        "str", "int", "float", "bool", "list", "dict"))
