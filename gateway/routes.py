"""The route table, built once from the methods' ``google.api.http`` options.

A path template (``google/api/http.proto``)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

compiles to one regular expression over the raw (still percent-encoded) path.

Matching is grpc-gateway's (``runtime/mux.go``): the routes of the request's
HTTP method are tried; when none matches but a route of another method does,
the answer is "Method Not Allowed" (which grpc-gateway sends as UNIMPLEMENTED,
HTTP 501); when no route matches at all, NOT_FOUND. Unlike grpc-gateway, the
routes of a method are tried by specificity, not by registration order:
literal segments before ``*`` variables before ``**``, segment by segment, and
a route with a custom verb before one without.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, message_factory

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_LITERAL = re.compile(r"[^/{}*:=]+")
_SLASH_ESCAPE = re.compile(r"%2[fF]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
HTTP_BODY = "google.api.HttpBody"

# Sort ranks of a segment: the lower, the more specific.
_LITERAL_RANK, _STAR_RANK, _DEEP_RANK = 0, 1, 2


class TemplateError(ValueError):
    """A path template that does not follow the grammar."""


class PathError(ValueError):
    """A path variable whose value is not valid percent-encoded UTF-8."""


class MalformedEscape(PathError):
    """A ``%`` in a path value not followed by two hex digits: grpc-gateway's
    ``MalformedSequenceError``, which it answers with HTTP 400 and code UNKNOWN."""


@dataclass(frozen=True)
class Variable:
    """A path variable: the dotted field path it binds, and whether it spans segments."""

    field_path: tuple[str, ...]
    multi_segment: bool

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


@dataclass(frozen=True)
class Template:
    """A compiled path template."""

    source: str
    regex: re.Pattern[str]
    variables: tuple[Variable, ...]
    ranks: tuple[int, ...]
    verb: str

    def match(self, path: str) -> dict[str, str] | None:
        """The raw values of the variables when ``path`` (raw, no query) matches."""
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return dict(zip((v.name for v in self.variables), found.groups(), strict=True))

    @property
    def sort_key(self) -> tuple[int, tuple[int, ...]]:
        return (0 if self.verb else 1, self.ranks)

    @property
    def openapi_path(self) -> str:
        """The template as an OpenAPI path: every variable as ``{field.path}``."""
        text = re.sub(r"\{([^}=]+)(?:=[^}]*)?\}", r"{\1}", self.source)
        return text


class _Parser:
    """A recursive-descent parser of one path template."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pos = 0
        self.pattern: list[str] = []
        self.variables: list[Variable] = []
        self.ranks: list[int] = []
        self.deep_seen = False

    def fail(self, why: str) -> TemplateError:
        return TemplateError(f"path template {self.source!r}: {why} at offset {self.pos}")

    def peek(self, text: str) -> bool:
        return self.source.startswith(text, self.pos)

    def take(self, text: str) -> None:
        if not self.peek(text):
            raise self.fail(f"expected {text!r}")
        self.pos += len(text)

    def parse(self) -> Template:
        self.take("/")
        self.segments(inside_variable=False)
        verb = ""
        if self.peek(":"):
            self.pos += 1
            verb = self.literal()
            self.pattern.append(":" + re.escape(verb))
        if self.pos != len(self.source):
            raise self.fail("unexpected text")
        return Template(
            source=self.source,
            regex=re.compile("/" + "".join(self.pattern)),
            variables=tuple(self.variables),
            ranks=tuple(self.ranks),
            verb=verb,
        )

    def literal(self) -> str:
        found = _LITERAL.match(self.source, self.pos)
        if found is None:
            raise self.fail("expected a literal")
        self.pos = found.end()
        return found.group()

    def segments(self, *, inside_variable: bool) -> None:
        first = True
        while first or self.peek("/"):
            if not first:
                self.pos += 1
                self.pattern.append("/")
            first = False
            self.segment(inside_variable=inside_variable)

    def segment(self, *, inside_variable: bool) -> None:
        if self.peek("**"):
            self.deep()
        elif self.peek("*"):
            self.pos += 1
            self.pattern.append("[^/]+")
            self.ranks.append(_STAR_RANK)
        elif self.peek("{"):
            if inside_variable:
                raise self.fail("nested variable")
            self.variable()
        else:
            self.pattern.append(re.escape(self.literal()))
            self.ranks.append(_LITERAL_RANK)

    def deep(self) -> None:
        if self.deep_seen:
            raise self.fail("more than one '**'")
        self.deep_seen = True
        self.pos += 2
        rest = self.source[self.pos :].removeprefix("}")
        # Last in the template, "**" may match zero segments; elsewhere one or more.
        last = rest == "" or rest.startswith(":")
        self.pattern.append(".*" if last else "[^/]+(?:/[^/]+)*")
        self.ranks.append(_DEEP_RANK)

    def variable(self) -> None:
        self.take("{")
        found = _IDENT.match(self.source, self.pos)
        if found is None:
            raise self.fail("expected a field path")
        self.pos = found.end()
        field_path = tuple(found.group().split("."))
        self.pattern.append("(")
        start = len(self.ranks)
        if self.peek("="):
            self.pos += 1
            self.segments(inside_variable=True)
        else:
            self.pattern.append("[^/]+")
            self.ranks.append(_STAR_RANK)
        self.take("}")
        self.pattern.append(")")
        multi = len(self.ranks) - start > 1 or _DEEP_RANK in self.ranks[start:]
        self.variables.append(Variable(field_path=field_path, multi_segment=multi))


def parse_template(source: str) -> Template:
    return _Parser(source).parse()


def decode_variable(raw: str, variable: Variable) -> str:
    """A variable's value: percent-decoded, except ``%2F`` in a multi-segment one.

    As http.proto says (and grpc-gateway's ``UnescapingModeAllExceptSlash``): a
    single-segment value is decoded fully, ``%2F`` included, after the path was
    split into segments; a multi-segment value keeps ``%2F`` as it is, so that it
    stays apart from the real slashes. A malformed escape is refused.
    """
    if "%" not in raw:
        return raw
    bad = _BAD_ESCAPE.search(raw)
    if bad is not None:
        raise MalformedEscape(f'malformed path escape "{raw[bad.start() : bad.start() + 3]}"')
    if variable.multi_segment:
        raw = _SLASH_ESCAPE.sub(lambda m: "%25" + m.group()[1:], raw)
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise PathError(f"path parameter {variable.name!r} is not percent-encoded UTF-8") from None


@dataclass(frozen=True)
class Method:
    """An RPC as the gateway calls it: its path, message classes and shape."""

    service: descriptor.ServiceDescriptor
    descriptor: descriptor.MethodDescriptor
    request_class: type[Any]
    response_class: type[Any]

    @property
    def grpc_path(self) -> str:
        return f"/{self.service.full_name}/{self.descriptor.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def http_body_response(self) -> bool:
        return bool(self.descriptor.output_type.full_name == HTTP_BODY)


@dataclass(frozen=True)
class Route:
    """One HTTP binding of a method."""

    http_method: str
    template: Template
    body: str  # "", "*", or a top-level request field name
    response_body: str
    method: Method
    binding_index: int = 0  # 0 for the main rule, 1... for additional_bindings
    bound_fields: frozenset[str] = field(default=frozenset())

    @property
    def operation_id(self) -> str:
        suffix = str(self.binding_index + 1) if self.binding_index else ""
        return f"{self.method.service.name}_{self.method.descriptor.name}{suffix}"


def _rule_pattern(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise TemplateError("an http rule without a pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), str(getattr(rule, kind))


def _make_route(rule: http_pb2.HttpRule, method: Method, index: int) -> Route:
    http_method, path = _rule_pattern(rule)
    template = parse_template(path)
    request_fields = method.descriptor.input_type.fields_by_name
    for variable in template.variables:
        _check_field_path(method.descriptor.input_type, variable.field_path, path)
    if rule.body not in ("", "*") and rule.body not in request_fields:
        raise TemplateError(f"{method.grpc_path}: body {rule.body!r} is not a request field")
    bound = {v.name for v in template.variables}
    if rule.body not in ("", "*"):
        bound.add(rule.body)
    return Route(
        http_method=http_method,
        template=template,
        body=rule.body,
        response_body=rule.response_body,
        method=method,
        binding_index=index,
        bound_fields=frozenset(bound),
    )


def _check_field_path(message: descriptor.Descriptor, path: Sequence[str], source: str) -> None:
    for depth, name in enumerate(path):
        field_descriptor = message.fields_by_name.get(name)
        if field_descriptor is None:
            raise TemplateError(f"{source}: {'.'.join(path)} is not a request field")
        if depth < len(path) - 1:
            if field_descriptor.message_type is None or _is_repeated(field_descriptor):
                raise TemplateError(f"{source}: {name} is not a singular message field")
            message = field_descriptor.message_type


def _is_repeated(field_descriptor: descriptor.FieldDescriptor) -> bool:
    return bool(field_descriptor.is_repeated)


def method_of(
    service: descriptor.ServiceDescriptor, method_descriptor: descriptor.MethodDescriptor
) -> Method:
    return Method(
        service=service,
        descriptor=method_descriptor,
        request_class=message_factory.GetMessageClass(method_descriptor.input_type),
        response_class=message_factory.GetMessageClass(method_descriptor.output_type),
    )


def routes_of(services: Iterable[descriptor.ServiceDescriptor]) -> list[Route]:
    """Every binding of every annotated unary or server-streaming method."""
    routes: list[Route] = []
    for service in services:
        for method_descriptor in service.methods:
            options = method_descriptor.GetOptions()
            if not options.HasExtension(annotations_pb2.http):
                continue
            if method_descriptor.client_streaming:
                continue  # client streams are not transcoded (see README)
            method = method_of(service, method_descriptor)
            rule = options.Extensions[annotations_pb2.http]
            rules = [rule, *rule.additional_bindings]
            routes.extend(_make_route(r, method, index) for index, r in enumerate(rules))
    return routes


@dataclass(frozen=True)
class Found:
    route: Route
    raw_params: dict[str, str]


class _Matcher:
    """The routes of one HTTP method as one regular expression: an alternative per
    route, in order, so one ``fullmatch`` finds the first route that matches."""

    def __init__(self, routes: Sequence[Route]) -> None:
        alternatives: list[str] = []
        self._by_group: dict[int, tuple[Route, tuple[str, ...], int]] = {}
        group = 1
        for route in routes:
            template = route.template
            alternatives.append(f"({template.regex.pattern})")
            names = tuple(variable.name for variable in template.variables)
            self._by_group[group] = (route, names, group + 1)
            group += 1 + template.regex.groups
        self._regex = re.compile("|".join(alternatives))

    def match(self, path: str) -> Found | None:
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        route, names, first = self._by_group[found.lastindex or 0]
        values = found.groups()[first - 1 : first - 1 + len(names)]
        return Found(route, dict(zip(names, values, strict=True)))


class Router:
    """Finds the route of a request: ``Found``, or the HTTP status of the routing error."""

    NOT_FOUND = 404
    METHOD_NOT_ALLOWED = 405

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: r.template.sort_key)
        self._by_method: dict[str, list[Route]] = {}
        for route in self.routes:
            self._by_method.setdefault(route.http_method, []).append(route)
        self._matchers = {method: _Matcher(routes) for method, routes in self._by_method.items()}

    def methods(self) -> frozenset[str]:
        return frozenset(self._by_method)

    def resolve(self, http_method: str, path: str) -> Found | int:
        matcher = self._matchers.get(http_method)
        if matcher is not None:
            found = matcher.match(path)
            if found is not None:
                return found
        for other, routes in self._by_method.items():
            if other == http_method:
                continue
            if any(route.template.match(path) is not None for route in routes):
                return self.METHOD_NOT_ALLOWED
        return self.NOT_FOUND

    def allowed(self, path: str) -> list[str]:
        """The HTTP methods that have a route for ``path``."""
        return sorted(
            method
            for method, routes in self._by_method.items()
            if any(route.template.match(path) is not None for route in routes)
        )
