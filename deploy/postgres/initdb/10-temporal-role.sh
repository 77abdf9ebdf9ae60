#!/usr/bin/env bash
# First start of the postgresql volume only (docker-entrypoint-initdb.d): the role the
# Temporal server connects as. It may create databases, so temporalio/auto-setup creates
# `temporal` and `temporal_visibility` itself; it cannot touch the `igny8` database.
#
# The role is deliberately not named "temporal": auto-setup skips creating a database
# whose name equals its user, expecting the postgres image to have made it.
#
# No `set -u`/`exit` here: the postgres entrypoint sources init scripts that are not
# executable, and would inherit them. A missing variable still aborts the init.

: "${TEMPORAL_DB_USER:?set TEMPORAL_DB_USER}"
: "${TEMPORAL_DB_PASSWORD:?set TEMPORAL_DB_PASSWORD}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db="$POSTGRES_DB" -v role="$TEMPORAL_DB_USER" -v password="$TEMPORAL_DB_PASSWORD" <<'SQL'
CREATE ROLE :"role" LOGIN CREATEDB PASSWORD :'password';
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
