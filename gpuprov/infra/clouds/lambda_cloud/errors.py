"""Lambda Cloud API errors as types, chosen by the API's ``code`` (never by message text)."""

from __future__ import annotations

from typing import Any

from gpuprov.infra.errors import GpuprovError


class LambdaError(GpuprovError):
    """Base of every Lambda Cloud error gpuprov reports."""


class LambdaApiError(LambdaError):
    """The API answered with an error envelope ``{"error": {"code", "message", "suggestion"?}}``."""

    code = "unknown"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 suggestion: str | None = None, path: str | None = None):
        self.code = code or type(self).code
        self.status = status
        self.api_message = message
        self.suggestion = suggestion
        self.path = path
        text = f"Lambda API {path or ''} answered {status or '-'} {self.code}: {message}"
        if suggestion:
            text += f" ({suggestion})"
        super().__init__(text)


class InvalidApiKey(LambdaApiError):
    code = "global/invalid-api-key"
    exit_code = 3

    def __init__(self, message: str, **kw: Any):
        super().__init__(message + "; set LAMBDA_API_KEY to a key from https://cloud.lambda.ai/api-keys", **kw)


class AccountInactive(LambdaApiError):
    code = "global/account-inactive"
    exit_code = 3


class InsufficientCapacity(LambdaApiError):
    code = "instance-operations/launch/insufficient-capacity"


class QuotaExceeded(LambdaApiError):
    code = "global/quota-exceeded"


class InvalidParameters(LambdaApiError):
    code = "global/invalid-parameters"
    exit_code = 2


class ObjectNotFound(LambdaApiError):
    code = "global/object-does-not-exist"


class FirewallRulesetInUse(LambdaApiError):
    code = "firewall-rulesets/firewall-ruleset-in-use"


class FilesystemInUse(LambdaApiError):
    code = "filesystems/filesystem-in-use"


class FilesystemInWrongRegion(LambdaApiError):
    code = "instance-operations/launch/file-system-in-wrong-region"


class ProviderError(LambdaApiError):
    """``provider/*``: Lambda's upstream is unavailable for a moment; retried with back-off."""

    code = "provider/internal-unavailable"
    retryable = True


class RateLimited(LambdaApiError):
    """HTTP 429 (not in the OpenAPI document, but it happens): retried after a pause."""

    code = "rate-limited"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: Any):
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)


class ServerError(LambdaApiError):
    """A 5xx answer with no known code (``global/internal-error`` included): retried with back-off."""

    code = "global/internal-error"
    retryable = True


class LambdaUnreachable(LambdaError):
    """The connection failed or timed out: the request may or may not have been acted on."""

    retryable = True


_BY_CODE: dict[str, type[LambdaApiError]] = {
    cls.code: cls
    for cls in (InvalidApiKey, AccountInactive, InsufficientCapacity, QuotaExceeded, InvalidParameters,
                ObjectNotFound, FirewallRulesetInUse, FilesystemInUse, FilesystemInWrongRegion, ServerError)
}


def error_for(status: int, body: Any, path: str, retry_after: str | None = None) -> LambdaApiError:
    """The exception type for an error answer: by ``error.code``; 429 and bare 5xx by status."""
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    code = str(err.get("code") or "")
    message = str(err.get("message") or f"HTTP {status}")
    kw: dict[str, Any] = {"code": code or None, "status": status, "suggestion": err.get("suggestion"), "path": path}
    if status == 429:
        seconds = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        return RateLimited(message, retry_after_s=seconds, **kw)
    if code.startswith("provider/"):
        return ProviderError(message, **kw)
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message, **kw)
    if status >= 500:
        return ServerError(message, **kw)
    return LambdaApiError(message, **kw)


class LaunchFailed(LambdaError):
    """No offer could be brought up; the message lists every offer tried and why it failed."""

    exit_code = 4

    def __init__(self, summary: str, attempts: list[tuple[str, str]]):
        self.attempts = attempts
        lines = "".join(f"\n  - {offer}: {why}" for offer, why in attempts)
        super().__init__(f"{summary}{lines}" if attempts else summary)


class InstanceFailed(LambdaError):
    """An instance gpuprov launched did not become usable; it has been terminated."""

    exit_code = 4


class TerminateFailed(LambdaError):
    """An instance could not be confirmed terminated: it may still bill. The message says which and what to do."""

    exit_code = 5
