"""Kubernetes ``Status`` errors with the API server's codes, reasons and wording."""

from __future__ import annotations

from typing import Any

from .kinds import Kind
from .kinds import Obj
from .validation import Cause


_CAUSE_REASONS = {
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Duplicate value": "FieldValueDuplicate",
    "Forbidden": "FieldValueForbidden",
    "Unsupported value": "FieldValueNotSupported",
}


class ApiError(Exception):
    """An error answer of the API, rendered as a ``Status`` object."""

    def __init__(
        self, code: int, reason: str, message: str, details: Obj | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        """Return the ``Status`` object the API server sends for this error."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def storage_error(message: str) -> ApiError:
    """500 for an etcd error the API server passes through unconverted.

    ``responsewriters.ErrorToAPIStatus`` turns an error that is no ``Status``
    into code 500 with reason ``StatusReasonUnknown`` (empty, so left out)
    and the error's text, e.g. etcd's ``etcdserver: request timed out``.
    """
    return ApiError(500, "", message)


def _details(kind: Kind, name: str) -> Obj:
    details: Obj = {"name": name}
    if kind.group:
        details["group"] = kind.group
    details["kind"] = kind.plural
    return details


def not_found(kind: Kind, name: str) -> ApiError:
    """404 for a missing object."""
    message = f'{kind.resource} "{name}" not found'
    return ApiError(404, "NotFound", message, _details(kind, name))


def already_exists(kind: Kind, name: str) -> ApiError:
    """409 for a create that collides with an existing name."""
    message = f'{kind.resource} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, _details(kind, name))


def conflict(kind: Kind, name: str, why: str) -> ApiError:
    """409 for a stale resourceVersion or a failed precondition."""
    message = f'Operation cannot be fulfilled on {kind.resource} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(kind, name))


STALE = (
    "the object has been modified; please apply your changes to the latest "
    "version and try again"
)


def forbidden(kind: Kind, name: str, why: str) -> ApiError:
    """403 for requests admission refuses."""
    message = f'{kind.resource} "{name}" is forbidden: {why}'
    return ApiError(403, "Forbidden", message, _details(kind, name))


def invalid(kind: Kind, name: str, causes: list[Cause]) -> ApiError:
    """422 for an object that fails validation."""
    return invalid_of(kind.group, kind.kind, name, causes)


def invalid_of(group: str, kind_name: str, name: str, causes: list[Cause]) -> ApiError:
    """422 ``Invalid`` as ``errors.NewInvalid`` words it, for any group and kind.

    Also for what has no :class:`~.kinds.Kind` row: request options
    (``ListOptions.meta.k8s.io``) and reviews. An empty name is left out of
    the details, as Go's ``omitempty`` leaves it.
    """
    texts = [f"{field}: {text}" for field, text in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    title = f"{kind_name}.{group}" if group else kind_name
    details: Obj = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind_name
    details["causes"] = [
        {
            "reason": next(
                (r for p, r in _CAUSE_REASONS.items() if text.startswith(p)),
                "FieldValueInvalid",
            ),
            "message": text,
            "field": field,
        }
        for field, text in causes
    ]
    return ApiError(422, "Invalid", f'{title} "{name}" is invalid: {joined}', details)


def bad_request(message: str) -> ApiError:
    """400 for a malformed request."""
    return ApiError(400, "BadRequest", message)


def no_resource() -> ApiError:
    """404 for a path that names no served resource."""
    return ApiError(
        404, "NotFound", "the server could not find the requested resource", {}
    )


def method_not_allowed() -> ApiError:
    """405 for a verb the resource path does not support."""
    message = "the server does not allow this method on the requested resource"
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media(content_type: str, accepted: Any) -> ApiError:
    """415 for a body in a format the endpoint does not accept."""
    message = (
        f"the body of the request was in an unknown format - accepted media types "
        f"include: {', '.join(accepted)}"
    )
    if not content_type:
        message = "the body of the request was in an unknown format"
    return ApiError(415, "UnsupportedMediaType", message, {})
