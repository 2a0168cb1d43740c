#!/usr/bin/env bash
# Verify the dbmate migrations against the committed db/schema.sql:
#   1. migrate a fresh temporary database and diff its schema with db/schema.sql;
#   2. roll back every migration and check that nothing but schema_migrations is left;
#   3. migrate up again and re-diff the schema.
# The temporary database is always dropped on exit.
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

# Keep dbmate's behaviour independent of the caller's environment and any .env file.
unset DATABASE_URL DBMATE_MIGRATIONS_DIR DBMATE_MIGRATIONS_TABLE DBMATE_SCHEMA_FILE \
    DBMATE_NO_DUMP_SCHEMA DBMATE_DRIVER

# with_database URL NAME: URL with its database name replaced by NAME; query
# parameters are kept, sslmode=disable is added when there are none.
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

# pg_dump (Debian / PostgreSQL >= 15.14) writes \restrict / \unrestrict lines
# carrying a random token, and "-- Dumped from/by" version lines; neither is
# part of the schema.
strip_restrict() {
    sed -i -e '/^\\restrict\b/d' -e '/^\\unrestrict\b/d' -e '/^-- Dumped \(from\|by\) /d' "$1"
}

DB_NAME="taskgate_migcheck_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
DB_URL="$(with_database "$BASE_URL" "$DB_NAME")"
WORK_DIR="$(mktemp -d)"

dbmate() {
    "$DBMATE" --env-file /dev/null --url "$DB_URL" --migrations-dir "$MIGRATIONS_DIR" "$@"
}

cleanup() {
    local rc=$?
    if ! dbmate drop >"$WORK_DIR/drop.log" 2>&1; then
        echo "warning: could not drop temporary database $DB_NAME:" >&2
        cat "$WORK_DIR/drop.log" >&2
    fi
    rm -rf "$WORK_DIR"
    exit "$rc"
}
trap cleanup EXIT

# run LABEL CMD...: run quietly, show the output only on failure.
run() {
    local label="$1"; shift
    if ! "$@" >"$WORK_DIR/cmd.log" 2>&1; then
        echo "FAIL: $label" >&2
        cat "$WORK_DIR/cmd.log" >&2
        return 1
    fi
}

# check_schema DUMP STAGE: diff a freshly dumped schema with the committed one.
check_schema() {
    local dump="$1" stage="$2"
    strip_restrict "$dump"
    # Blank lines squeezed: older pg_dumps (the pgserver wheel's 16.2) write no
    # \restrict line, so no blank line after it either.
    if ! diff -u --label "$SCHEMA_FILE (committed)" --label "$SCHEMA_FILE ($stage)" \
            <(sed '/./,$!d' "$SCHEMA_FILE" | cat -s) <(sed '/./,$!d' "$dump" | cat -s) \
            >"$WORK_DIR/schema.diff"; then
        cat "$WORK_DIR/schema.diff" >&2
        echo "FAIL: $SCHEMA_FILE does not match the migrations ($stage)." >&2
        echo "hint: run make migrate-schema (scripts/dump_schema.sh) and commit db/schema.sql" >&2
        return 1
    fi
}

# applied_count: number of applied migrations according to dbmate status.
applied_count() {
    dbmate status 2>&1 | sed -n 's/^Applied: *\([0-9][0-9]*\)$/\1/p'
}

if [[ ! -f "$SCHEMA_FILE" ]]; then
    echo "FAIL: $SCHEMA_FILE is missing; hint: run make migrate-schema" >&2
    exit 1
fi

migration_files=("$MIGRATIONS_DIR"/*.sql)
n_migrations=${#migration_files[@]}

# 1. Fresh database: up, dump into a temporary file, compare.
run "dbmate up (fresh database)" dbmate --schema-file "$WORK_DIR/schema.up.sql" up
check_schema "$WORK_DIR/schema.up.sql" "after up"

applied="$(applied_count)"
if [[ "$applied" != "$n_migrations" ]]; then
    echo "FAIL: expected $n_migrations applied migrations after up, dbmate status says '${applied}'" >&2
    exit 1
fi

# 2. Roll everything back, one migration at a time.
for ((i = 0; i < n_migrations; i++)); do
    run "dbmate rollback (step $((i + 1)) of $n_migrations)" dbmate --no-dump-schema rollback
done
applied="$(applied_count)"
if [[ "$applied" != "0" ]]; then
    echo "FAIL: $applied migration(s) still applied after $n_migrations rollbacks" >&2
    dbmate status >&2 || true
    exit 1
fi

leftovers="$(psql "$DB_URL" -X -v ON_ERROR_STOP=1 -At -c "
    SELECT kind || ' ' || name FROM (
        SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table'
                              WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                              WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' END AS kind,
               c.relname AS name
          FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
           AND c.relname <> 'schema_migrations'
        UNION ALL
        SELECT 'function', p.oid::regprocedure::text
          FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'type', t.typname
          FROM pg_type t
         WHERE t.typnamespace = 'public'::regnamespace
           AND t.typtype IN ('e', 'd', 'r', 'm')
    ) leftovers ORDER BY 1")"
if [[ -n "$leftovers" ]]; then
    echo "FAIL: objects left in schema public after rolling back every migration:" >&2
    sed 's/^/  /' <<<"$leftovers" >&2
    exit 1
fi

# 3. Up again on the rolled-back database; the schema must be identical.
run "dbmate up (after rollback)" dbmate --schema-file "$WORK_DIR/schema.reup.sql" up
check_schema "$WORK_DIR/schema.reup.sql" "after rollback + up"

echo "OK: $n_migrations migrations match $SCHEMA_FILE; full rollback and re-apply succeeded."
