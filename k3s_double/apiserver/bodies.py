"""Request bodies: a JSON or YAML object, decoded as the API server does."""

from __future__ import annotations

import json
from collections.abc import Mapping

import yaml

from .errors import bad_request
from .errors import unsupported_media
from .kinds import Obj


#: Server-side apply's content type, a YAML (or JSON) object.
APPLY = "application/apply-patch+yaml"


def decode_body(body: bytes, headers: Mapping[str, str]) -> Obj:
    """Decode a request body (JSON or YAML) into an object (400 if it is not)."""
    ctype = headers.get("content-type", "application/json").split(";")[0].strip()
    try:
        if ctype in ("application/yaml", APPLY):
            obj = yaml.safe_load(body)
        elif ctype in ("application/json", ""):
            obj = json.loads(body or b"null")
        else:
            raise unsupported_media(ctype, ["application/json", "application/yaml"])
    except (ValueError, yaml.YAMLError) as error:
        raise bad_request(f"error decoding request body: {error}") from error
    if not isinstance(obj, dict):
        raise bad_request("Object 'Kind' is missing in the request body")
    return obj
