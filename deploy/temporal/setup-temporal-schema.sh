#!/usr/bin/env bash
# Create Temporal's two PostgreSQL databases and bring their schema to the server release
# of this admin-tools image, idempotently.
#
# Runs as the `temporal-schema` service of docker-compose.yml (image temporalio/admin-tools,
# the same release as temporalio/server) before the server starts, on every `up`: the first
# start creates the databases and the schema, a later one after an upgrade applies only the
# schema versions that are missing (temporal-sql-tool update-schema), else changes nothing.
# This is what the dev-only temporalio/auto-setup image did inside the server container.
#
# Environment: SQL_HOST, SQL_PORT (default 5432), SQL_USER, SQL_PASSWORD (read by
# temporal-sql-tool itself), TEMPORAL_DB (default temporal), VISIBILITY_DB (default
# temporal_visibility), SCHEMA_DIR (the image's PostgreSQL v12 schema), WAIT_SECONDS.
set -euo pipefail

HOST="${SQL_HOST:-postgresql}"
PORT="${SQL_PORT:-5432}"
USER_NAME="${SQL_USER:?set SQL_USER}"
: "${SQL_PASSWORD:?set SQL_PASSWORD}"
TEMPORAL_DB="${TEMPORAL_DB:-temporal}"
VISIBILITY_DB="${VISIBILITY_DB:-temporal_visibility}"
SCHEMA_DIR="${SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}"
WAIT_SECONDS="${WAIT_SECONDS:-120}"

log() { echo "[setup-temporal-schema] $*"; }
sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$HOST" -p "$PORT" -u "$USER_NAME" "$@"
}

# PostgreSQL is healthy before this runs (depends_on), but a restart may race it.
deadline=$((SECONDS + WAIT_SECONDS))
until nc -z "$HOST" "$PORT"; do
  if ((SECONDS >= deadline)); then
    log "PostgreSQL at $HOST:$PORT not reachable after ${WAIT_SECONDS}s"
    exit 1
  fi
  sleep 1
done

setup() {
  local db="$1" schema="$2" output
  if ! output="$(sql_tool --db "$db" create 2>&1)"; then
    if ! grep -qi "already exists" <<<"$output"; then
      log "could not create database $db: $output"
      exit 1
    fi
  fi
  # Version 0.0 first (a no-op once the schema_version table exists), then every
  # versioned step this release has and the database does not.
  sql_tool --db "$db" setup-schema -v 0.0
  sql_tool --db "$db" update-schema -d "$SCHEMA_DIR/$schema/versioned"
  log "$db: schema up to date ($schema)"
}

setup "$TEMPORAL_DB" temporal
setup "$VISIBILITY_DB" visibility
