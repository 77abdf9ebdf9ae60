#!/usr/bin/env bash
# Register igny8's custom search attributes on the Temporal cluster, idempotently.
#
# Runs once as the `temporal-search-attributes` service of docker-compose.yml (image
# temporalio/admin-tools), after `temporal` is healthy; the worker starts only when this
# exits 0. Safe to run again: an attribute that already exists is left alone.
#
# The list below must equal core/temporal.py SEARCH_ATTRIBUTES (names and types);
# tests/test_compose.py fails when they drift apart.
#
# Environment: TEMPORAL_ADDRESS (host:port, default temporal:7233), TEMPORAL_NAMESPACE
# (default "default"), WAIT_SECONDS (how long to wait for the namespace, default 300).
set -euo pipefail

# name=Type, one per line (Type as the Temporal CLI spells it).
SEARCH_ATTRIBUTES="
Igny8AccountId=Int
Igny8SiteId=Int
Igny8RunKind=Keyword
"

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
WAIT_SECONDS="${WAIT_SECONDS:-300}"
TEMPORAL_BIN="${TEMPORAL_BIN:-temporal}"

log() { echo "[register-search-attributes] $*"; }

list_attributes() {
  "$TEMPORAL_BIN" operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE"
}

# The type column of NAME in a `search-attribute list` table; empty when absent.
registered_type() { awk -v n="$1" '$1 == n { print $2 }' <<<"$2"; }

# auto-setup creates the namespace in the background after the frontend is SERVING,
# so the healthcheck passing does not mean the namespace exists yet.
deadline=$((SECONDS + WAIT_SECONDS))
until existing="$(list_attributes 2>&1)"; do
  if ((SECONDS >= deadline)); then
    log "namespace '$NAMESPACE' on $ADDRESS not ready after ${WAIT_SECONDS}s: $existing"
    exit 1
  fi
  log "waiting for namespace '$NAMESPACE' on $ADDRESS"
  sleep 2
done

for entry in $SEARCH_ATTRIBUTES; do
  name="${entry%%=*}"
  type="${entry#*=}"
  current="$(registered_type "$name" "$existing")"
  if [[ -z "$current" ]]; then
    if output="$("$TEMPORAL_BIN" operator search-attribute create \
      --address "$ADDRESS" --namespace "$NAMESPACE" --name "$name" --type "$type" 2>&1)"; then
      log "registered $name ($type)"
      continue
    fi
    # Lost a race with another registrar ("already exists")? Then the list shows it now.
    current="$(registered_type "$name" "$(list_attributes 2>/dev/null || true)")"
    if [[ -z "$current" ]]; then
      log "could not register $name ($type): $output"
      exit 1
    fi
  fi
  if [[ "$current" != "$type" ]]; then
    log "$name is registered as $current but igny8 needs $type; fix it by hand"
    exit 1
  fi
  log "$name ($type) already registered"
done

log "search attributes on namespace '$NAMESPACE':"
list_attributes
