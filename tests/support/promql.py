"""A small PromQL reader for the monitoring tests: which metrics and labels an
expression uses, and the same expression with ``bool`` after each comparison.

It is a tokenizer with a little context, not a parser: enough for the rules
and dashboard of monitoring/, which Prometheus itself parses (promtool, the
stack test).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-z]*)
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=,(){}])
    """,
    re.VERBOSE,
)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _GROUPING | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
# Aggregations may put their grouping before the parenthesis: ``sum by (le) (...)``.
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}  # fmt: skip
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}


class PromQLError(ValueError):
    """Text the tokenizer cannot read."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int


@dataclass
class Selector:
    """``name{label op "value", ...}``."""

    name: str
    matchers: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class Usage:
    """The metrics an expression selects and the labels it groups or matches on."""

    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.selectors}


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise PromQLError(f"cannot read {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append(Token(kind, match.group(), match.start(), match.end()))
        pos = match.end()
    return tokens


def _label_list(tokens: list[Token], i: int) -> tuple[set[str], int]:
    """The labels of ``( a, b )`` starting at ``tokens[i] == "("``; the index after ``)``."""
    labels: set[str] = set()
    i += 1
    while i < len(tokens) and tokens[i].text != ")":
        if tokens[i].kind == "ident":
            labels.add(tokens[i].text)
        i += 1
    return labels, i + 1


def _matchers(tokens: list[Token], i: int) -> tuple[dict[str, tuple[str, str]], int]:
    """``{label op "value", ...}`` starting at ``tokens[i] == "{"``; the index after ``}``."""
    matchers: dict[str, tuple[str, str]] = {}
    i += 1
    while i < len(tokens) and tokens[i].text != "}":
        if tokens[i].kind == "ident" and i + 2 < len(tokens):
            op, value = tokens[i + 1], tokens[i + 2]
            if value.kind != "string":
                raise PromQLError(f"a matcher needs a quoted value, near {value.text!r}")
            matchers[tokens[i].text] = (op.text, value.text[1:-1])
            i += 3
        else:
            i += 1
    return matchers, i + 1


def usage(expr: str) -> Usage:
    tokens = tokenize(expr)
    found = Usage()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1].text if i + 1 < len(tokens) else ""
        if token.kind == "ident" and token.text in _GROUPING:
            if following == "(":
                labels, i = _label_list(tokens, i + 1)
                found.grouping |= labels
                continue
        elif (
            token.kind == "ident"
            and token.text.lower() not in _KEYWORDS
            and following != "("
            and not (token.text in _AGGREGATIONS and following in {"by", "without"})
        ):
            selector = Selector(token.text)
            i += 1
            if following == "{":
                selector.matchers, i = _matchers(tokens, i)
            found.selectors.append(selector)
            continue
        i += 1
    return found


def with_bool(expr: str) -> str:
    """``expr`` with ``bool`` after each comparison (outside braces), so that it
    returns 0 or 1 for every series it compares instead of only the true ones."""
    tokens = tokenize(expr)
    out: list[str] = []
    last = 0
    depth = 0
    for i, token in enumerate(tokens):
        depth += {"{": 1, "}": -1}.get(token.text, 0)
        out.append(expr[last : token.end])
        last = token.end
        next_text = tokens[i + 1].text if i + 1 < len(tokens) else ""
        if depth == 0 and token.text in COMPARISONS and next_text != "bool":
            out.append(" bool")
    out.append(expr[last:])
    return "".join(out)
