"""List and watch options as kube-apiserver decodes and validates them.

The query string of a list or watch decodes into ``ListOptions``
(``metainternalversion``). Its booleans decode as apimachinery's
``Convert_Slice_string_To_bool`` does, not as Go's ``strconv.ParseBool``: a
parameter is false when absent, ``0`` or ``false`` in any case, and true for
anything else, the empty string included; ``sendInitialEvents`` is a
``*bool``, so absent (None) differs from false.

:func:`validate` is ``ValidateListOptions`` (apimachinery
``pkg/apis/meta/internalversion/validation/validation.go``), which every
list, watch and deletecollection passes before storage is asked: a 422
``ListOptions.meta.k8s.io "" is invalid: ...`` with one cause per broken
rule, worded as the API server words them. Which rules apply depends on the
``watch`` parameter alone: a watch through a deprecated ``/watch/`` path
has ``watch`` unset and is checked as a list (``sendInitialEvents is
forbidden for list``), as in kube-apiserver, whose handler forces the watch
after validating.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import invalid_of
from .validation import Cause


NOT_OLDER_THAN = "NotOlderThan"
EXACT = "Exact"


def query_bool(query: Mapping[str, str], name: str) -> bool | None:
    """A boolean query parameter as the API server decodes it (None: absent)."""
    if name not in query:
        return None
    value = query[name]
    return not (value == "0" or value.lower() == "false")


@dataclass(frozen=True)
class ListOptions:
    """The options of one list or watch request that validation looks at."""

    watch: bool = False
    send_initial_events: bool | None = None
    resource_version: str = ""
    resource_version_match: str = ""
    allow_watch_bookmarks: bool = False
    continue_token: str = ""

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> ListOptions:
        """Decode the options from a request's query parameters."""
        return cls(
            watch=bool(query_bool(query, "watch")),
            send_initial_events=query_bool(query, "sendInitialEvents"),
            resource_version=query.get("resourceVersion", ""),
            resource_version_match=query.get("resourceVersionMatch", ""),
            allow_watch_bookmarks=bool(query_bool(query, "allowWatchBookmarks")),
            continue_token=query.get("continue", ""),
        )


def _forbidden(field: str, detail: str) -> Cause:
    return field, f"Forbidden: {detail}"


def _not_supported(field: str, value: str, supported: tuple[str, ...]) -> Cause:
    listed = ", ".join(f'"{item}"' for item in supported)
    return field, f'Unsupported value: "{value}": supported values: {listed}'


def list_causes(options: ListOptions) -> list[Cause]:
    """What ``ValidateListOptions`` refuses in a list (``watch`` unset)."""
    found: list[Cause] = []
    match = options.resource_version_match
    if match:
        if not options.resource_version:
            found.append(
                _forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is "
                    "provided",
                )
            )
        if options.continue_token:
            found.append(
                _forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                )
            )
        if match not in (EXACT, NOT_OLDER_THAN):
            found.append(
                _not_supported(
                    "resourceVersionMatch", match, (EXACT, NOT_OLDER_THAN, "")
                )
            )
        if match == EXACT and options.resource_version == "0":
            found.append(
                _forbidden(
                    "resourceVersionMatch",
                    'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                )
            )
    if options.send_initial_events is not None:
        found.append(
            _forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list")
        )
    return found


def watch_causes(options: ListOptions, *, watch_list: bool) -> list[Cause]:
    """What ``validateWatchOptions`` refuses; ``watch_list``: the feature gate."""
    found: list[Cause] = []
    match = options.resource_version_match
    if options.send_initial_events is not None:
        if match != NOT_OLDER_THAN:
            found.append(
                _forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to "
                    f"{NOT_OLDER_THAN}",
                )
            )
        if not watch_list:
            found.append(
                _forbidden(
                    "sendInitialEvents",
                    "sendInitialEvents is forbidden for watch unless the WatchList "
                    "feature gate is enabled",
                )
            )
    if match:
        if options.send_initial_events is None:
            found.append(
                _forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden for watch unless "
                    "sendInitialEvents is provided",
                )
            )
        if match != NOT_OLDER_THAN:
            found.append(
                _not_supported("resourceVersionMatch", match, (NOT_OLDER_THAN,))
            )
        if options.continue_token:
            found.append(
                _forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                )
            )
    return found


def validate(options: ListOptions, *, watch_list: bool = True) -> None:
    """Raise the API server's 422 when the options break a rule."""
    found = (
        watch_causes(options, watch_list=watch_list)
        if options.watch
        else list_causes(options)
    )
    if found:
        raise invalid_of("meta.k8s.io", "ListOptions", "", found)
