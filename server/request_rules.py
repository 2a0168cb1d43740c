"""The request rules declared in the protos, read once, for the server's validation.

A request field's rules are ``google.api.field_behavior`` REQUIRED and the
``taskgate.v1.field_rules`` option (``proto/taskgate/v1/rules.proto``); a
method's, the ``taskgate.v1.method_rules`` option (``public``). The gateway's
OpenAPI document reads the same options from the same descriptors, so what the
server enforces and what the document states come from one declaration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.api import field_behavior_pb2
from google.protobuf import descriptor

from taskgate.v1 import rules_pb2

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FieldRule:
    """Everything declared about one request field; ``None``: the rule does not apply."""

    required: bool
    uuid: bool
    aliases: tuple[str, ...]
    min_len: int | None
    max_len: int | None
    pattern: re.Pattern[str] | None
    pattern_description: str
    minimum: float | None
    exclusive_minimum: float | None
    maximum: float | None
    min_items: int | None
    max_items: int | None
    enum_defined_only: bool


def _optional(rules: rules_pb2.FieldRules, name: str) -> Any:
    return getattr(rules, name) if rules.HasField(name) else None  # type: ignore[arg-type]


def declared(value: T | None, what: str) -> T:
    """``value``, which the code needs declared; a LookupError at import if it is not."""
    if value is None:
        raise LookupError(f"the protos do not declare {what}")
    return value


def expect_declared(condition: bool, what: str) -> None:
    """Fails the import when a declaration the code relies on has changed."""
    if not condition:
        raise LookupError(f"the protos no longer declare {what}; the validation relies on it")


def rule_of(field: descriptor.FieldDescriptor) -> FieldRule:
    options = field.GetOptions()
    behaviours = options.Extensions[field_behavior_pb2.field_behavior]
    rules = options.Extensions[rules_pb2.field_rules]
    return FieldRule(
        required=field_behavior_pb2.REQUIRED in behaviours,
        uuid=rules.uuid,
        aliases=tuple(rules.aliases),
        min_len=_optional(rules, "min_len"),
        max_len=_optional(rules, "max_len"),
        pattern=re.compile(rules.pattern) if rules.pattern else None,
        pattern_description=rules.pattern_description,
        minimum=_optional(rules, "minimum"),
        exclusive_minimum=_optional(rules, "exclusive_minimum"),
        maximum=_optional(rules, "maximum"),
        min_items=_optional(rules, "min_items"),
        max_items=_optional(rules, "max_items"),
        enum_defined_only=rules.enum_defined_only,
    )


def field_rule(message: Any, field: str) -> FieldRule:
    """The rules of ``message``'s field ``field`` (``message``: a generated class)."""
    return rule_of(message.DESCRIPTOR.fields_by_name[field])


def public_methods(services: Iterable[descriptor.ServiceDescriptor]) -> frozenset[str]:
    """The gRPC paths of the methods declared ``public`` (no session needed)."""
    return frozenset(
        f"/{service.full_name}/{method.name}"
        for service in services
        for method in service.methods
        if method.GetOptions().Extensions[rules_pb2.method_rules].public
    )
