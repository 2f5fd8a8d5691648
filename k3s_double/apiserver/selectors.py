"""Label and field selectors, parsed and matched the way the API server does.

Label selectors support equality (``a=b``, ``a==b``, ``a!=b``), set-based
requirements (``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``) and the numeric
``a>1`` / ``a<1``.  Field selectors only support (in)equality; which field
labels a kind accepts is decided by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass


class SelectorError(ValueError):
    """A selector that does not parse; the API answers 400 BadRequest."""


_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_TOKEN = re.compile(r"\s*(==|!=|=|!|\(|\)|,|<|>|[^\s=!(),<>]+)")


@dataclass(frozen=True)
class Requirement:
    """One requirement of a label selector."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Tell whether a label set satisfies this requirement."""
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if not present:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == ">" else number < bound


LabelSelector = tuple[Requirement, ...]


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        found = _TOKEN.match(text, pos)
        if found is None:
            raise SelectorError(f"unable to parse requirement: {text!r}")
        tokens.append(found.group(1))
        pos = found.end()
    return tokens


def _check_key(key: str) -> str:
    if not _QUALIFIED.match(key) or len(key) > 317:
        raise SelectorError(
            f'unable to parse requirement: invalid label key "{key}": name part '
            "must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise SelectorError(
            f'unable to parse requirement: invalid label value: "{value}": a '
            "valid label must be an empty string or consist of alphanumeric "
            "characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character"
        )
    return value


def parse_labels(text: str) -> LabelSelector:
    """Parse a label selector string; the empty string matches everything."""
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    pos = 0

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise SelectorError(f"unable to parse requirement: {text!r} ends early")
        pos += 1
        return tokens[pos - 1]

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    while pos < len(tokens):
        token = take()
        if token == "!":
            requirements.append(Requirement(_check_key(take()), "!"))
        else:
            key = _check_key(token)
            op = peek()
            if op is None or op == ",":
                requirements.append(Requirement(key, "exists"))
            elif op in ("=", "==", "!="):
                take()
                nxt = peek()
                value = "" if nxt in (None, ",") else take()
                kind = "!=" if op == "!=" else "="
                requirements.append(Requirement(key, kind, (_check_value(value),)))
            elif op in ("in", "notin"):
                take()
                if take() != "(":
                    raise SelectorError(
                        f"unable to parse requirement: expected '(' after {op}"
                    )
                values: list[str] = []
                while (item := take()) != ")":
                    if item != ",":
                        values.append(_check_value(item))
                requirements.append(Requirement(key, op, tuple(values)))
            elif op in (">", "<"):
                take()
                bound = take()
                if not re.fullmatch(r"-?\d+", bound):
                    raise SelectorError(
                        f"unable to parse requirement: for '{op}' operator, the "
                        f"value must be an integer, got {bound!r}"
                    )
                requirements.append(Requirement(key, op, (bound,)))
            else:
                raise SelectorError(
                    f"unable to parse requirement: found '{op}', expected: "
                    "'=', '!=', '==', 'in', notin'"
                )
        if pos < len(tokens) and take() != ",":
            raise SelectorError(
                f"unable to parse requirement: found '{tokens[pos - 1]}', expected: ','"
            )
    return tuple(requirements)


def match_labels(selector: LabelSelector, labels: Mapping[str, str] | None) -> bool:
    """Tell whether labels satisfy every requirement of the selector."""
    return all(req.matches(labels or {}) for req in selector)


def from_label_selector(spec: Mapping[str, object] | None) -> LabelSelector:
    """Turn a ``metav1.LabelSelector`` (matchLabels, matchExpressions) into one."""
    if not spec:
        return ()
    requirements: list[Requirement] = []
    match_labels_ = spec.get("matchLabels") or {}
    assert isinstance(match_labels_, dict)
    for key, value in match_labels_.items():
        requirements.append(Requirement(str(key), "=", (str(value),)))
    expressions = spec.get("matchExpressions") or []
    assert isinstance(expressions, list)
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists"}
    operators["DoesNotExist"] = "!"
    for expr in expressions:
        op = operators.get(str(expr.get("operator")), "in")
        values = tuple(str(v) for v in expr.get("values") or ())
        requirements.append(Requirement(str(expr.get("key")), op, values))
    return tuple(requirements)


FieldSelector = tuple[tuple[str, bool, str], ...]


def parse_fields(text: str, allowed: Callable[[str], bool]) -> FieldSelector:
    """Parse a field selector into (field, wants_equal, value) terms.

    ``allowed`` says which field labels the resource supports; any other
    label is rejected with the API server's message.
    """
    terms: list[tuple[str, bool, str]] = []
    for part in filter(None, (p.strip() for p in re.split(r"(?<!\\),", text))):
        found = re.fullmatch(r"([^=!]+?)\s*(==|!=|=)\s*(.*)", part)
        if found is None:
            raise SelectorError(
                f"invalid selector: '{text}'; can't understand '{part}'"
            )
        field, op, value = found.groups()
        if not allowed(field):
            raise SelectorError(f"field label not supported: {field}")
        terms.append((field, op != "!=", value.replace("\\,", ",")))
    return tuple(terms)


def match_fields(selector: FieldSelector, fields: Mapping[str, str]) -> bool:
    """Tell whether an object's field values satisfy every term."""
    return all((fields.get(f, "") == v) == eq for f, eq, v in selector)
