"""The one exception tree of modelyard.

Every error a caller can see is a :class:`GatewayError`. It knows its HTTP status and its error
``type`` in both wire dialects, so the API layer renders it in the caller's own shape.

::

    GatewayError                      500  api_error / api_error
    ├── InvalidRequestError           400  invalid_request_error / invalid_request_error
    │   ├── RequestTooLargeError      413  invalid_request_error / request_too_large
    │   └── UnsupportedCapabilityError 400 (a model cannot do what was asked)
    ├── AuthenticationError           401  authentication_error / authentication_error
    ├── PermissionDeniedError         403  permission_error / permission_error
    ├── RateLimitedError              429  rate_limit_error / rate_limit_error (code rate_limit_exceeded)
    │   └── BudgetExceededError       429  (code budget_exceeded)
    ├── NotFoundError                 404  not_found_error / not_found_error
    │   └── ModelNotFoundError        404  (code model_not_found)
    ├── ConfigError                   (not an HTTP error: raised at load time, names file and line)
    ├── NotReadyError                 503  api_error / overloaded_error
    └── UpstreamError                 the upstream's status, mapped (see :func:`upstream_types`)
        ├── UpstreamTimeoutError      504  timeout / timeout_error
        └── UpstreamConnectionError   502  api_connection_error / api_error

Messages say what is wrong and how to fix it. They never contain secrets.
"""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """Base class. ``status`` is the HTTP status the caller receives."""

    status: int = 500
    openai_type: str = "api_error"
    anthropic_type: str = "api_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code


class InvalidRequestError(GatewayError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class RequestTooLargeError(InvalidRequestError):
    status = 413
    anthropic_type = "request_too_large"
    code = "request_too_large"


class UnsupportedCapabilityError(InvalidRequestError):
    """A provider was asked for something it cannot do (e.g. embeddings from a chat-only model)."""

    code = "unsupported_capability"


class AuthenticationError(GatewayError):
    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"


class NotFoundError(GatewayError):
    status = 404
    openai_type = "not_found_error"
    anthropic_type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    openai_type = "invalid_request_error"
    code = "model_not_found"
    param = "model"


class NotReadyError(GatewayError):
    status = 503
    openai_type = "api_error"
    anthropic_type = "overloaded_error"


class RateLimitedError(GatewayError):
    """A key's or team's RPM/TPM limit, or a budget, says no. ``retry_after_s`` feeds Retry-After."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class BudgetExceededError(RateLimitedError):
    code = "budget_exceeded"


class ConfigError(Exception):
    """The configuration is invalid. ``problems`` lists every error with its location."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


_STATUS_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("not_found_error", "not_found_error"),
    408: ("timeout", "timeout_error"),
    409: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "invalid_request_error"),
    429: ("rate_limit_error", "rate_limit_error"),
    500: ("api_error", "api_error"),
    502: ("api_error", "api_error"),
    503: ("api_error", "overloaded_error"),
    504: ("timeout", "timeout_error"),
    529: ("api_error", "overloaded_error"),
}


def upstream_types(status: int) -> tuple[str, str]:
    """The (OpenAI, Anthropic) error types for an upstream HTTP status."""
    if status in _STATUS_TYPES:
        return _STATUS_TYPES[status]
    return ("invalid_request_error", "invalid_request_error") if status < 500 else ("api_error", "api_error")


class UpstreamError(GatewayError):
    """An upstream answered with an error, or could not be reached.

    ``headers`` are lower-cased so ``retry-after`` reads the same for every provider.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        provider: str,
        model: str,
        headers: Mapping[str, str] | None = None,
        code: str | None = None,
        upstream_type: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.upstream_status = status
        # Upstream 401/403 mean *our* provider credentials are wrong: the caller did nothing wrong,
        # so it must not look like their key failed. Report it as a gateway-side 502.
        if status in (401, 403):
            message = f"the upstream rejected modelyard's credentials for {provider}: {message}"
            self.message = message
            self.args = (message,)
            status = 502
            self.code = None  # e.g. "invalid_api_key" would wrongly blame the caller's own key
        elif status == 404:
            # The caller asked for a model we serve; the upstream not knowing it is our config's fault.
            message = (
                f"the upstream ({provider}) does not know model {model!r}; check the deployment's "
                f"`model` in the config: {message}"
            )
            self.message = message
            self.args = (message,)
            status = 502
            self.code = None
        self.status = status
        self.provider = provider
        self.model = model
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.upstream_type = upstream_type
        self.openai_type, self.anthropic_type = upstream_types(status)

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")


class UpstreamTimeoutError(UpstreamError):
    def __init__(self, message: str, *, provider: str, model: str) -> None:
        super().__init__(message, status=504, provider=provider, model=model)


class UpstreamConnectionError(UpstreamError):
    def __init__(self, message: str, *, provider: str, model: str) -> None:
        super().__init__(message, status=502, provider=provider, model=model)
