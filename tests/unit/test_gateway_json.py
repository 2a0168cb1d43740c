"""The gateway's compiled JSON output against protobuf's own ``json_format``.

Every message of the product's protos and of the test-only ShapesService is
written empty and filled (every field: int64 beyond 2**53, enums by name and by
a number without one, repeated, maps, nested messages, Timestamps, Durations,
bytes), and must give what ``json_format.MessageToDict`` gives, once the unset
message fields (``null`` in the gateway's output, left out by json_format) are
dropped.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import descriptor, json_format, message_factory, timestamp_pb2
from google.protobuf.message import Message

from gateway import transcode
from taskgate.v1 import session_service_pb2, task_service_pb2, user_service_pb2
from tests.gateway.shapes import service_descriptor
from tests.support.json_values import without_nulls

FD = descriptor.FieldDescriptor
_INTS = {
    FD.TYPE_INT64: -(2**62) - 7,
    FD.TYPE_SINT64: -(2**60) - 3,
    FD.TYPE_SFIXED64: 2**61 + 5,
    FD.TYPE_UINT64: 2**64 - 1,
    FD.TYPE_FIXED64: 2**63 + 9,
    FD.TYPE_INT32: -(2**31),
    FD.TYPE_SINT32: 2**31 - 1,
    FD.TYPE_SFIXED32: -17,
    FD.TYPE_UINT32: 2**32 - 1,
    FD.TYPE_FIXED32: 7,
}


def _all_messages() -> list[descriptor.Descriptor]:
    files = [
        task_service_pb2.DESCRIPTOR,
        user_service_pb2.DESCRIPTOR,
        session_service_pb2.DESCRIPTOR,
        service_descriptor().file,
    ]
    found: list[descriptor.Descriptor] = []

    def visit(message_type: descriptor.Descriptor) -> None:
        if message_type.GetOptions().map_entry:
            return
        found.append(message_type)
        for nested in message_type.nested_types:
            visit(nested)

    for file in files:
        for message_type in file.message_types_by_name.values():
            visit(message_type)
    return found


MESSAGES = _all_messages()


def _scalar(field: Any, variant: int) -> Any:
    if field.enum_type is not None:
        values = field.enum_type.values
        return values[variant % len(values)].number if variant < 2 else 999  # 999: no name
    if field.type in _INTS:
        return _INTS[field.type] if variant else 0
    if field.type == FD.TYPE_DOUBLE:
        return (0.0, 1.5e300, float("-inf"))[variant]
    if field.type == FD.TYPE_FLOAT:
        return (0.0, 0.1, float("nan"))[variant]
    if field.type == FD.TYPE_BOOL:
        return variant == 1
    if field.type == FD.TYPE_BYTES:
        return (b"", b"\xff\x00\xfe", b"a+/b")[variant]
    return ("", 'é "q" \\ \n', "x")[variant]


def _fill_well_known(message: Message, variant: int) -> bool:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        seconds = (0, 1_700_000_000, -62135596800)[variant]
        nanos = (0, 123_456_789, 120_000_000)[variant]
        message.seconds, message.nanos = seconds, nanos  # type: ignore[attr-defined]
    elif name == "google.protobuf.Duration":
        seconds, nanos = ((0, 0), (-3, -500_000_000), (90, 1_000))[variant]
        message.seconds, message.nanos = seconds, nanos  # type: ignore[attr-defined]
    elif name == "google.protobuf.FieldMask":
        message.paths.extend(["a.b", "c"][: variant + 1])  # type: ignore[attr-defined]
    elif (
        name.startswith("google.protobuf.")
        and name.endswith("Value")
        and "value" in (message.DESCRIPTOR.fields_by_name)
    ):
        message.value = _scalar(  # type: ignore[attr-defined]
            message.DESCRIPTOR.fields_by_name["value"], variant
        )
    elif name.startswith("google."):
        message.SetInParent()
    else:
        return False
    return True


def _fill_map(entries: Any, entry: Any, variant: int, depth: int) -> None:
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    for item in (1, 2):
        key = _scalar(key_field, item)
        if value_field.message_type is None:
            entries[key] = _scalar(value_field, item)
        elif depth < 3:
            _fill(entries[key], variant, depth + 1)


def _fill(message: Message, variant: int, depth: int = 0) -> None:
    """Sets every field (the first member of each oneof), nested messages to depth 3."""
    if _fill_well_known(message, variant):
        return
    seen_oneofs: set[str] = set()
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.name in seen_oneofs:
            continue
        if oneof is not None:
            seen_oneofs.add(oneof.name)
        _fill_field(message, field, variant, depth)


def _fill_field(message: Message, field: Any, variant: int, depth: int) -> None:
    target = field.message_type
    value = getattr(message, field.name)
    if target is None:
        if field.is_repeated:
            value.extend([_scalar(field, 1), _scalar(field, 2)])
        else:
            setattr(message, field.name, _scalar(field, variant))
    elif target.GetOptions().map_entry:
        _fill_map(value, target, variant, depth)
    elif depth >= 3:
        return
    elif field.is_repeated:
        for _ in range(2):
            _fill(value.add(), variant, depth + 1)
    else:
        _fill(value, variant, depth + 1)
        value.SetInParent()


def _same_json(ours: Any, theirs: Any) -> bool:
    # NaN != NaN: compare the JSON texts of both, keys sorted
    return json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)


@pytest.mark.parametrize("variant", [0, 1, 2])
@pytest.mark.parametrize("message_type", MESSAGES, ids=lambda m: m.full_name)
def test_compiled_json_matches_json_format(
    message_type: descriptor.Descriptor, variant: int
) -> None:
    message = message_factory.GetMessageClass(message_type)()
    if variant:
        _fill(message, variant)
    reference = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    ours = transcode.to_dict(message)
    assert _same_json(without_nulls(ours), reference)
    assert _same_json(without_nulls(json.loads(transcode.to_json(message))), reference)
    # every field is written: the unset message fields too, as null
    written = {f.json_name for f in message_type.fields if f.containing_oneof is None}
    assert written <= set(ours)


def test_the_table_covers_every_shape() -> None:
    kinds = {(f.type, f.is_repeated) for m in MESSAGES for f in m.fields}
    assert (FD.TYPE_INT64, False) in kinds
    assert (FD.TYPE_ENUM, True) in kinds
    assert (FD.TYPE_BYTES, False) in kinds
    names = {f.message_type.full_name for m in MESSAGES for f in m.fields if f.message_type}
    assert {"google.protobuf.Timestamp", "google.protobuf.Duration"} <= names
    assert any(
        f.message_type and f.message_type.GetOptions().map_entry for m in MESSAGES for f in m.fields
    )


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (-62135596800, 0),
        (253402300799, 999_999_999),
        (0, 0),
        (-1, 1),
        (951782400, 1_000),
        (1_700_000_000, 1_000_000),
        (1_700_000_000, 120_000_000),
        (4_102_444_800, 123_456_789),
    ],
)
def test_timestamp_json_is_to_json_string(seconds: int, nanos: int) -> None:
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert transcode.timestamp_json(stamp) == stamp.ToJsonString()


@pytest.mark.parametrize(("seconds", "nanos"), [(-62135596801, 0), (253402300800, 0), (0, -1)])
def test_timestamp_json_refuses_what_to_json_string_refuses(seconds: int, nanos: int) -> None:
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    with pytest.raises(ValueError, match="Timestamp is not valid"):
        transcode.timestamp_json(stamp)
