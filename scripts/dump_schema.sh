#!/usr/bin/env bash
# Regenerate db/schema.sql by applying every migration to a fresh temporary
# database (dropped afterwards).
#
# Environment:
#   DBMATE                      dbmate binary (default: .venv/bin/dbmate)
#   TASKGATE_TEST_DATABASE_URL  base Postgres URL; only the database name is replaced
#                               (default: postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DBMATE="${DBMATE:-.venv/bin/dbmate}"
BASE_URL="${TASKGATE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
MIGRATIONS_DIR="db/migrations"
SCHEMA_FILE="db/schema.sql"

unset DATABASE_URL DBMATE_MIGRATIONS_DIR DBMATE_MIGRATIONS_TABLE DBMATE_SCHEMA_FILE \
    DBMATE_NO_DUMP_SCHEMA DBMATE_DRIVER

# with_database URL NAME: see scripts/check_migrations.sh.
with_database() {
    local url="$1" name="$2"
    local re='^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)(/[^?#]*)?(\?[^#]*)?$'
    if [[ ! "$url" =~ $re ]]; then
        echo "error: cannot parse database URL (expected scheme://[user@]host[:port]/dbname[?params])" >&2
        return 1
    fi
    local prefix="${BASH_REMATCH[1]}" query="${BASH_REMATCH[3]:-}"
    if [[ -z "$query" || "$query" == "?" ]]; then
        query="?sslmode=disable"
    fi
    printf '%s/%s%s\n' "$prefix" "$name" "$query"
}

DB_NAME="taskgate_schemadump_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
DB_URL="$(with_database "$BASE_URL" "$DB_NAME")"
WORK_DIR="$(mktemp -d)"

dbmate() {
    "$DBMATE" --env-file /dev/null --url "$DB_URL" --migrations-dir "$MIGRATIONS_DIR" "$@"
}

cleanup() {
    local rc=$?
    if ! dbmate drop >/dev/null 2>"$WORK_DIR/drop.log"; then
        echo "warning: could not drop temporary database $DB_NAME:" >&2
        cat "$WORK_DIR/drop.log" >&2
    fi
    rm -rf "$WORK_DIR"
    exit "$rc"
}
trap cleanup EXIT

# Dump into a temporary file first so that a failed run leaves db/schema.sql alone.
dbmate --schema-file "$WORK_DIR/schema.sql" up >"$WORK_DIR/up.log" 2>&1 || {
    echo "FAIL: dbmate up" >&2
    cat "$WORK_DIR/up.log" >&2
    exit 1
}
sed -i -e '/^\\restrict\b/d' -e '/^\\unrestrict\b/d' -e '/^-- Dumped \(from\|by\) /d' "$WORK_DIR/schema.sql"
cp "$WORK_DIR/schema.sql" "$SCHEMA_FILE"
echo "Wrote $SCHEMA_FILE"
