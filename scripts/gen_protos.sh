#!/usr/bin/env bash
# Regenerates the Python stubs in gen/ (or in the folder given) from proto/:
# _pb2 modules, _pb2_grpc modules, and .pyi stubs for both (mypy-protobuf).
set -euo pipefail
python=${PYTHON:-.venv/bin/python}
out=${1:-gen}
bin=$(dirname "$python")
scripts/third_party_protos.sh build/third_party
rm -rf "$out/taskgate"
mkdir -p "$out"
# shellcheck disable=SC2046
PATH="$bin:$PATH" "$python" -m grpc_tools.protoc \
  -Iproto -Ibuild/third_party \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  $(find proto -name '*.proto' | sort)
# The same files with their comments, for the gateway's OpenAPI descriptions
# (the _pb2 modules carry no source info).
# shellcheck disable=SC2046
"$python" -m grpc_tools.protoc -Iproto -Ibuild/third_party --include_source_info \
  --descriptor_set_out="$out/taskgate/v1/descriptor_set.binpb" \
  $(find proto -name '*.proto' | sort)
# gen/ is an import root: make taskgate and taskgate.v1 regular packages.
find "$out/taskgate" -type d -exec sh -c 'touch "$1/__init__.py"; : > "$1/py.typed"' _ {} \;
