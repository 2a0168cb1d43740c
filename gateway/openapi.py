"""An OpenAPI 3.1 document built from the same routes and descriptors as the gateway.

Paths, parameters (path, then query as grpc-gateway reads it), request bodies,
response and error schemas come from the descriptors. So do the rules the server
enforces, from the same declarations its validation reads: a field's
``google.api.field_behavior`` REQUIRED (``required``; a non-empty string or
array), its ``taskgate.v1.field_rules`` (``format: uuid``, ``minLength``,
``maxLength``, ``pattern``, ``minimum``, ``exclusiveMinimum``, ``maximum``,
``minItems``, ``maxItems``, enum values without the zero one), and a method's
``taskgate.v1.method_rules`` (no security requirement when public; the error
responses it may give, each with the ``google.rpc.Status`` schema). A message
that is one oneof (``Filter``) has exactly one of its members; elsewhere a
oneof's members are never two at once. Descriptions are the
proto comments, read from a descriptor set compiled with ``--include_source_info``
(``gen/taskgate/v1/descriptor_set.binpb``, rewritten by ``make proto`` and
checked for drift in ``make lint``), since the generated ``_pb2`` modules carry
no comments.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
from google.api import field_behavior_pb2
from google.protobuf import descriptor, descriptor_pb2
from google.rpc import code_pb2

from gateway.errors import HTTP_STATUS
from gateway.routes import HTTP_BODY, Route
from taskgate.v1 import rules_pb2

FD = descriptor.FieldDescriptor
Schema = dict[str, Any]

STATUS_REF = "#/components/schemas/google.rpc.Status"
CANONICAL_UUID = "^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"
# Codes any method may answer: bad input (the gateway's transcoding included),
# limits, outages, deadlines and bugs.
COMMON_ERRORS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)
# Statuses the gateway itself may give, beyond those of the codes.
_GATEWAY_STATUSES = {
    413: "RESOURCE_EXHAUSTED: the request body is larger than the gateway takes.",
    431: "RESOURCE_EXHAUSTED: a request header line is too long.",
}
_MAX_QUERY_DEPTH = 4
_LINT_DIRECTIVE = re.compile(r"^\s*buf:lint:\S+.*$", re.MULTILINE)
_INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32 = {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1}
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"}
_SCALARS: dict[int, Schema] = {
    FD.TYPE_INT32: _INT32,
    FD.TYPE_SINT32: _INT32,
    FD.TYPE_SFIXED32: _INT32,
    FD.TYPE_UINT32: _UINT32,
    FD.TYPE_FIXED32: _UINT32,
    FD.TYPE_INT64: _INT64,
    FD.TYPE_SINT64: _INT64,
    FD.TYPE_SFIXED64: _INT64,
    FD.TYPE_UINT64: _UINT64,
    FD.TYPE_FIXED64: _UINT64,
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}
_WRAPPER_TYPES = {
    "DoubleValue": FD.TYPE_DOUBLE,
    "FloatValue": FD.TYPE_FLOAT,
    "Int64Value": FD.TYPE_INT64,
    "UInt64Value": FD.TYPE_UINT64,
    "Int32Value": FD.TYPE_INT32,
    "UInt32Value": FD.TYPE_UINT32,
    "BoolValue": FD.TYPE_BOOL,
    "StringValue": FD.TYPE_STRING,
    "BytesValue": FD.TYPE_BYTES,
}
for _name, _kind in _WRAPPER_TYPES.items():
    _WELL_KNOWN[f"google.protobuf.{_name}"] = _SCALARS[_kind]
STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "The error body: a google.rpc.Status in protobuf JSON.",
    "properties": {
        "code": {**_INT32, "description": "The gRPC status code."},
        "message": {"type": "string", "description": "What went wrong."},
        "details": {
            "type": "array",
            "items": _WELL_KNOWN["google.protobuf.Any"],
            "description": "google.rpc error details, such as BadRequest, each with its @type.",
        },
    },
    "required": ["code", "message", "details"],
}

# -- comments ---------------------------------------------------------------------------

# Field numbers in descriptor.proto used by SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


def _clean(comment: str) -> str:
    comment = _LINT_DIRECTIVE.sub("", comment)
    lines = [line[1:] if line.startswith(" ") else line for line in comment.splitlines()]
    return "\n".join(lines).strip()


def _message_names(
    prefix: str, message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], out: dict[Any, str]
) -> None:
    name = f"{prefix}.{message.name}"
    out[path] = name
    for i, field in enumerate(message.field):
        out[(*path, _MESSAGE_FIELD, i)] = f"{name}.{field.name}"
    for i, nested in enumerate(message.nested_type):
        _message_names(name, nested, (*path, _MESSAGE_NESTED, i), out)
    for i, enum in enumerate(message.enum_type):
        _enum_names(name, enum, (*path, _MESSAGE_ENUM, i), out)


def _enum_names(
    prefix: str,
    enum: descriptor_pb2.EnumDescriptorProto,
    path: tuple[int, ...],
    out: dict[Any, str],
) -> None:
    out[path] = f"{prefix}.{enum.name}"
    for i, value in enumerate(enum.value):
        # enum values are scoped like siblings of their enum
        out[(*path, _ENUM_VALUE, i)] = f"{prefix}.{enum.name}.{value.name}"


def comments_of(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    """Leading comments by full name (service, method, message, field, enum, value)."""
    comments: dict[str, str] = {}
    for file in files:
        names: dict[Any, str] = {}
        package = file.package
        for i, message in enumerate(file.message_type):
            _message_names(package, message, (_FILE_MESSAGE, i), names)
        for i, enum in enumerate(file.enum_type):
            _enum_names(package, enum, (_FILE_ENUM, i), names)
        for i, service in enumerate(file.service):
            names[(_FILE_SERVICE, i)] = f"{package}.{service.name}"
            for j, method in enumerate(service.method):
                names[(_FILE_SERVICE, i, _SERVICE_METHOD, j)] = (
                    f"{package}.{service.name}.{method.name}"
                )
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            if name is not None and location.leading_comments:
                comments[name] = _clean(location.leading_comments)
    return comments


def load_descriptor_set(data: bytes) -> dict[str, str]:
    return comments_of(descriptor_pb2.FileDescriptorSet.FromString(data).file)


def product_comments() -> dict[str, str]:
    """The comments of the taskgate protos, from the descriptor set beside the stubs."""
    resource = importlib.resources.files("taskgate.v1") / "descriptor_set.binpb"
    try:
        return load_descriptor_set(resource.read_bytes())
    except FileNotFoundError:  # pragma: no cover - `make proto` writes it
        return {}


# -- schemas ----------------------------------------------------------------------------


def _rules(field: FD) -> rules_pb2.FieldRules:
    rules: rules_pb2.FieldRules = field.GetOptions().Extensions[rules_pb2.field_rules]
    return rules


def is_required(field: FD) -> bool:
    behaviours = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.REQUIRED in behaviours


def _string_rules(schema: Schema, field: FD, rules: rules_pb2.FieldRules) -> Schema:
    if rules.uuid:
        schema = {**schema, "format": "uuid", "pattern": CANONICAL_UUID}
        if rules.aliases:
            return {"anyOf": [schema, {"type": "string", "enum": list(rules.aliases)}]}
        return schema
    if rules.HasField("min_len"):
        schema["minLength"] = rules.min_len
    elif is_required(field):
        schema["minLength"] = 1  # an empty string is a missing value
    if rules.HasField("max_len"):
        schema["maxLength"] = rules.max_len
    if rules.pattern:
        schema["pattern"] = rules.pattern
    return schema


def _number_rules(schema: Schema, rules: rules_pb2.FieldRules) -> Schema:
    integer = schema.get("type") == "integer"

    def number(value: float) -> float | int:
        return int(value) if integer and value.is_integer() else value

    if rules.HasField("exclusive_minimum"):
        schema.pop("minimum", None)
        schema["exclusiveMinimum"] = number(rules.exclusive_minimum)
    if rules.HasField("minimum"):
        schema["minimum"] = number(rules.minimum)
    if rules.HasField("maximum"):
        schema["maximum"] = number(rules.maximum)
    return schema


def constrained(schema: Schema, field: FD) -> Schema:
    """A value's schema with the rules declared on ``field`` (one element if repeated)."""
    rules = _rules(field)
    if field.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return _string_rules(dict(schema), field, rules)
    if field.enum_type is not None and rules.enum_defined_only:
        zero = field.enum_type.values_by_number[0].name
        return {**schema, "enum": [name for name in schema["enum"] if name != zero]}
    if schema.get("type") in ("integer", "number"):
        return _number_rules(dict(schema), rules)
    if schema.get("format") == "int64" and rules.HasField("minimum"):
        return _int64_rules(dict(schema), rules)
    return schema


def _int64_rules(schema: Schema, rules: rules_pb2.FieldRules) -> Schema:
    """An int64 travels as a JSON string (protojson): a pattern states its bound."""
    if rules.minimum != 0 or rules.HasField("maximum") or rules.HasField("exclusive_minimum"):
        raise LookupError("only a minimum of 0 can be stated for an int64 (as a pattern)")
    schema["pattern"] = "^[0-9]{1,19}$"
    return schema


def array_of(items: Schema, field: FD) -> Schema:
    rules = _rules(field)
    schema: Schema = {"type": "array", "items": items}
    if rules.HasField("min_items"):
        schema["minItems"] = rules.min_items
    elif is_required(field):
        schema["minItems"] = 1
    if rules.HasField("max_items"):
        schema["maxItems"] = rules.max_items
    return schema


def _ref(message: descriptor.Descriptor) -> Schema:
    return {"$ref": f"#/components/schemas/{message.full_name}"}


class _Builder:
    def __init__(self, comments: Mapping[str, str]) -> None:
        self.comments = comments
        self.schemas: dict[str, Schema] = {"google.rpc.Status": STATUS_SCHEMA}

    def describe(self, schema: Schema, full_name: str) -> Schema:
        text = self.comments.get(full_name)
        if text:
            return {**schema, "description": text}
        return schema

    def message(self, message: descriptor.Descriptor) -> Schema:
        """The schema of a message: a well-known form or a $ref to a component."""
        known = _WELL_KNOWN.get(message.full_name)
        if known is not None:
            return dict(known)
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # placeholder against recursion
            self.schemas[message.full_name] = self.object(message, exclude=())
        return _ref(message)

    def object(self, message: descriptor.Descriptor, exclude: Sequence[str]) -> Schema:
        fields = [field for field in message.fields if field.name not in exclude]
        properties = {field.json_name: self.field(field) for field in fields}
        schema: Schema = {"type": "object", "properties": properties}
        required = [field.json_name for field in fields if is_required(field)]
        if required:
            schema["required"] = required
        oneofs = [oneof for oneof in message.oneofs if not _synthetic(oneof)]
        if len(oneofs) == 1 and len(oneofs[0].fields) == len(fields):
            # nothing but one oneof (Filter): exactly one of its members
            schema.update(additionalProperties=False, minProperties=1, maxProperties=1)
        else:
            for oneof in oneofs:  # at most one member of each
                members = [{"required": [field.json_name]} for field in oneof.fields]
                schema.setdefault("allOf", []).append({"not": {"anyOf": _pairs(members)}})
        return self.describe(schema, message.full_name)

    def value(self, field: FD) -> Schema:
        if field.enum_type is not None:
            names = [v.name for v in field.enum_type.values]
            schema = {"type": "string", "enum": names}
            return self.describe(constrained(schema, field), field.enum_type.full_name)
        if field.message_type is not None:
            return self.message(field.message_type)
        return constrained(dict(_SCALARS[field.type]), field)

    def field(self, field: FD) -> Schema:
        target = field.message_type
        if target is not None and target.GetOptions().map_entry:
            schema: Schema = {
                "type": "object",
                "additionalProperties": self.value(target.fields_by_name["value"]),
            }
        elif field.is_repeated:
            schema = array_of(self.value(field), field)
        elif target is not None and not _in_oneof(field):
            # unset message fields are written as null
            schema = {"anyOf": [self.value(field), {"type": "null"}]}
        else:
            schema = self.value(field)
        return self.describe(schema, field.full_name)


def _pairs(members: list[Schema]) -> list[Schema]:
    """Two members of a oneof at once: what ``not`` refuses."""
    return [
        {"required": first["required"] + second["required"]}
        for index, first in enumerate(members)
        for second in members[index + 1 :]
    ]


def _synthetic(oneof: descriptor.OneofDescriptor) -> bool:
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


def _in_oneof(field: FD) -> bool:
    oneof = field.containing_oneof
    return oneof is not None and not _synthetic(oneof)


# -- operations -------------------------------------------------------------------------


def _summary(text: str) -> str:
    first = text.split("\n\n", 1)[0].replace("\n", " ")
    sentence = re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
    return sentence.rstrip(".")


def _path_parameters(route: Route, builder: _Builder) -> list[Schema]:
    parameters = []
    for variable in route.template.variables:
        message = route.method.descriptor.input_type
        field = None
        for name in variable.field_path:
            field = message.fields_by_name[name]
            if field.message_type is not None:
                message = field.message_type
        assert field is not None
        schema = builder.value(field)
        if "$ref" in schema:  # pragma: no cover - a path variable is a scalar
            schema = {"type": "string"}
        description = builder.comments.get(field.full_name, "")
        if variable.multi_segment:
            description = (description + " May contain '/'.").strip()
        parameter: Schema = {
            "name": variable.name,
            "in": "path",
            "required": True,
            "schema": schema,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _query_parameters(
    message: descriptor.Descriptor,
    bound: frozenset[str],
    builder: _Builder,
    prefix: tuple[str, ...] = (),
    json_prefix: tuple[str, ...] = (),
) -> list[Schema]:
    """Every leaf field a query may set: not bound by the path or the body."""
    parameters: list[Schema] = []
    for field in message.fields:
        path = (*prefix, field.name)
        json_path = (*json_prefix, field.json_name)
        target = field.message_type
        if ".".join(path) in bound or (target is not None and target.GetOptions().map_entry):
            continue
        if target is not None and target.full_name not in _WELL_KNOWN:
            if not field.is_repeated and len(path) < _MAX_QUERY_DEPTH:
                parameters += _query_parameters(target, bound, builder, path, json_path)
            continue
        schema = builder.value(field)
        parameter: Schema = {"name": ".".join(json_path), "in": "query"}
        if field.is_repeated:
            parameter.update(schema=array_of(schema, field), style="form", explode=True)
        else:
            parameter["schema"] = schema
        if is_required(field):
            parameter["required"] = True
        description = builder.comments.get(field.full_name)
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _request_body(route: Route, builder: _Builder) -> Schema | None:
    request = route.method.descriptor.input_type
    if route.body == "":
        return None
    if route.body == "*":
        top_level = {v.field_path[0] for v in route.template.variables if len(v.field_path) == 1}
        if top_level:
            schema = builder.object(request, exclude=sorted(top_level))
        else:
            schema = builder.message(request)
    else:
        schema = builder.field(request.fields_by_name[route.body])
    return {"required": _body_required(route), "content": {"application/json": {"schema": schema}}}


def _body_required(route: Route) -> bool:
    """Whether the body carries a REQUIRED field (one the path does not bind)."""
    request = route.method.descriptor.input_type
    if route.body != "*":
        return is_required(request.fields_by_name[route.body])
    bound = {v.field_path[0] for v in route.template.variables}
    return any(is_required(f) for f in request.fields if f.name not in bound)


def _responses(route: Route, builder: _Builder) -> Schema:
    method = route.method
    output = method.descriptor.output_type
    if method.http_body_response:
        content: Schema = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
        description = "The raw bytes, with their content type."
    else:
        if route.response_body:
            schema = builder.field(output.fields_by_name[route.response_body])
        else:
            schema = builder.message(output)
        description = "A successful response."
        content = {"application/json": {"schema": schema}}
        if method.server_streaming:
            chunk = {
                "type": "object",
                "properties": {"result": schema, "error": {"$ref": STATUS_REF}},
            }
            description = (
                'A stream: one JSON object a line, {"result": ...} per message and a final '
                '{"error": ...} if the stream fails; Server-Sent Events with '
                "Accept: text/event-stream."
            )
            content = {
                "application/json": {"schema": chunk},
                "application/x-ndjson": {"schema": chunk},
                "text/event-stream": {"schema": {"type": "string"}},
            }
    return {"200": {"description": description, "content": content}, **_error_responses(route)}


def method_rules(method: descriptor.MethodDescriptor) -> rules_pb2.MethodRules:
    rules: rules_pb2.MethodRules = method.GetOptions().Extensions[rules_pb2.method_rules]
    return rules


def _error_responses(route: Route) -> Schema:
    """Every error status the operation may answer, with the codes behind each."""
    rules = method_rules(route.method.descriptor)
    codes = list(COMMON_ERRORS)
    if not rules.public:
        codes.append(grpc.StatusCode.UNAUTHENTICATED)
    declared = {code_pb2.Code.Name(number) for number in rules.errors}
    codes += [code for code in grpc.StatusCode if code.name in declared]
    by_status: dict[int, list[str]] = {}
    for code in codes:
        names = by_status.setdefault(HTTP_STATUS[code], [])
        if code.name not in names:
            names.append(code.name)
    descriptions = {status: " or ".join(names) + "." for status, names in by_status.items()}
    if route.body:
        descriptions[413] = _GATEWAY_STATUSES[413]
    descriptions[431] = _GATEWAY_STATUSES[431]
    content = {"application/json": {"schema": {"$ref": STATUS_REF}}}
    return {
        str(status): {"description": descriptions[status], "content": content}
        for status in sorted(descriptions)
    }


def _operation(route: Route, builder: _Builder) -> Schema:
    method = route.method
    full_name = method.descriptor.full_name
    comment = builder.comments.get(full_name, "")
    bound = route.bound_fields
    parameters = _path_parameters(route, builder)
    if route.body != "*":
        parameters += _query_parameters(method.descriptor.input_type, bound, builder)
    operation: Schema = {
        "operationId": route.operation_id,
        "tags": [method.service.name],
        "summary": _summary(comment) if comment else method.descriptor.name,
        "parameters": parameters,
        "responses": _responses(route, builder),
        "x-grpc-method": method.grpc_path,
    }
    if comment:
        operation["description"] = comment
    operation["security"] = [] if method_rules(method.descriptor).public else [{"bearer": []}]
    body = _request_body(route, builder)
    if body is not None:
        operation["requestBody"] = body
    return operation


def build_document(
    routes: Iterable[Route],
    comments: Mapping[str, str],
    *,
    title: str = "taskgate",
    version: str = "v1",
) -> dict[str, Any]:
    builder = _Builder(comments)
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, Schema] = {}
    for route in sorted(routes, key=lambda r: (r.template.source, r.http_method)):
        service = route.method.service
        tag: Schema = {"name": service.name}
        if comments.get(service.full_name):
            tag["description"] = comments[service.full_name]
        tags.setdefault(service.name, tag)
        item = paths.setdefault(route.template.openapi_path, {})
        item[route.http_method.lower()] = _operation(route, builder)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "HTTP/JSON transcoding of the gRPC API, generated from the google.api.http "
                "annotations. Errors are google.rpc.Status objects."
            ),
        },
        "tags": sorted(tags.values(), key=lambda t: str(t["name"])),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(builder.schemas.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A session id from POST /v1/sessions.",
                }
            },
        },
        "security": [{"bearer": []}],  # public operations say "security": []
    }


__all__ = ["HTTP_BODY", "build_document", "load_descriptor_set", "product_comments"]
