#!/usr/bin/env bash
# Runs dbmate (up, status, rollback, ...) against TASKGATE_DATABASE_URL, creating
# the database if needed. sslmode=disable is added when the URL names no sslmode
# (dbmate's driver would otherwise insist on TLS, unlike libpq's "prefer").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
url=${TASKGATE_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/taskgate}
if [[ "$url" != *sslmode=* ]]; then
  if [[ "$url" == *\?* ]]; then url="$url&sslmode=disable"; else url="$url?sslmode=disable"; fi
fi
exec "${DBMATE:-.venv/bin/dbmate}" --env-file /dev/null --url "$url" \
  --migrations-dir db/migrations --no-dump-schema --wait --wait-timeout 30s "${@:-up}"
