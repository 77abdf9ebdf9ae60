#!/usr/bin/env bash
# First start of the postgresql volume only (docker-entrypoint-initdb.d): the role the
# Temporal server connects as. It may create databases, so the `temporal-schema` service
# (temporalio/admin-tools, deploy/temporal/setup-temporal-schema.sh) creates `temporal` and
# `temporal_visibility` itself; it cannot touch the `igny8` database.
#
# The role is deliberately not named "temporal", a database's name: a role and a database
# of one name invite tools that assume the postgres image already made that database.
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
