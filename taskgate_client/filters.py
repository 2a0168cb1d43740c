"""``NAME[:KEY=VALUE[,KEY=VALUE...]]`` → a ``taskgate.v1.Filter``.

Names and parameters are the fields of the ``Filter`` message, the same that
ListFilters lists (``blur:radius=2``, ``resize:width=512,height=512``,
``flip:direction=horizontal``, ``grayscale``). Types are checked here, so a
typo fails before anything is sent; the server checks the ranges.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from taskgate.v1 import task_service_pb2 as task_pb

_FILTERS: Descriptor = task_pb.Filter.DESCRIPTOR
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


class FilterSyntaxError(ValueError):
    """The spec does not name a filter and its parameters correctly."""


def names() -> list[str]:
    return [field.name for field in _FILTERS.oneofs_by_name["filter"].fields]


def _enum_value(enum: EnumDescriptor, text: str) -> int:
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")  # e.g. DIRECTION_
    choices = [v.name.removeprefix(prefix).lower() for v in enum.values if v.number != 0]
    value = enum.values_by_name.get(prefix + text.upper())
    if value is None or value.number == 0:
        raise ValueError(f"use one of {', '.join(choices)}")
    return int(value.number)


def _typed(field: FieldDescriptor, text: str) -> object:
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return float(text)
    if field.type == FieldDescriptor.TYPE_INT32:
        return int(text)
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered not in _TRUE | _FALSE:
            raise ValueError("use true or false")
        return lowered in _TRUE
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return _enum_value(field.enum_type, text)
    raise ValueError(f"unsupported parameter type {field.type}")  # pragma: no cover


_TYPE_NAMES = {
    FieldDescriptor.TYPE_DOUBLE: "a number",
    FieldDescriptor.TYPE_INT32: "a whole number",
    FieldDescriptor.TYPE_BOOL: "true or false",
    FieldDescriptor.TYPE_ENUM: "a choice",
}


def parse(spec: str) -> task_pb.Filter:
    name, _, params = spec.strip().partition(":")
    field = _FILTERS.fields_by_name.get(name.strip().lower())
    if field is None or field.containing_oneof is None:
        raise FilterSyntaxError(
            f"unknown filter {name!r} in {spec!r}: use one of {', '.join(names())}"
        )
    message = task_pb.Filter()
    options = getattr(message, field.name)
    options.SetInParent()
    known = options.DESCRIPTOR.fields_by_name
    for pair in filter(None, (p.strip() for p in params.split(","))):
        key, sep, value = pair.partition("=")
        parameter = known.get(key.strip())
        if not sep or not value.strip():
            raise FilterSyntaxError(f"{spec!r}: write parameters as key=value, got {pair!r}")
        if parameter is None:
            allowed = ", ".join(known) or "no parameters"
            raise FilterSyntaxError(f"{spec!r}: {field.name} has no parameter {key!r} ({allowed})")
        try:
            setattr(options, parameter.name, _typed(parameter, value.strip()))
        except ValueError as exc:
            wanted = _TYPE_NAMES.get(parameter.type, "a value")
            raise FilterSyntaxError(
                f"{spec!r}: {parameter.name} must be {wanted} ({exc})"
            ) from None
    return message
