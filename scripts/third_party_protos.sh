#!/usr/bin/env bash
# Copies the googleapis .proto files that proto/ imports (google/api, google/rpc)
# out of the googleapis-common-protos wheel into build/third_party, a git-ignored
# folder that buf and protoc use as an include path. Nothing here is committed.
set -euo pipefail
python=${PYTHON:-.venv/bin/python}
dest=${1:-build/third_party}
src=$("$python" -c 'import os; from google.api import annotations_pb2 as a; print(os.path.dirname(os.path.dirname(os.path.dirname(a.__file__))))')
rm -rf "$dest"
mkdir -p "$dest/google/api" "$dest/google/rpc"
cp "$src"/google/api/*.proto "$dest/google/api/"
cp "$src"/google/rpc/*.proto "$dest/google/rpc/"
