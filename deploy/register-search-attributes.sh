#!/usr/bin/env bash
# Create the namespace (if missing, with its retention) and register igny8's custom search
# attributes on the Temporal cluster, idempotently.
#
# Runs once as the `temporal-search-attributes` service of docker-compose.yml (image
# temporalio/admin-tools), after `temporal` is healthy; the worker starts only when this
# exits 0. Safe to run again: a namespace or attribute that already exists is left alone.
#
# The list below must equal core/temporal.py SEARCH_ATTRIBUTES (names and types);
# tests/test_compose.py fails when they drift apart.
#
# Environment: TEMPORAL_ADDRESS (host:port, default temporal:7233), TEMPORAL_NAMESPACE
# (default "default"), TEMPORAL_RETENTION (a new namespace's history retention, default
# 168h), WAIT_SECONDS (how long to wait for the server and the namespace, default 300).
set -euo pipefail

# name=Type, one per line (Type as the Temporal CLI spells it).
SEARCH_ATTRIBUTES="
Igny8AccountId=Int
Igny8SiteId=Int
Igny8RunKind=Keyword
"

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
RETENTION="${TEMPORAL_RETENTION:-168h}"
WAIT_SECONDS="${WAIT_SECONDS:-300}"
TEMPORAL_BIN="${TEMPORAL_BIN:-temporal}"

log() { echo "[register-search-attributes] $*"; }

list_attributes() {
  "$TEMPORAL_BIN" operator search-attribute list --address "$ADDRESS" --namespace "$NAMESPACE"
}

# The type column of NAME in a `search-attribute list` table; empty when absent.
registered_type() { awk -v n="$1" '$1 == n { print $2 }' <<<"$2"; }

deadline=$((SECONDS + WAIT_SECONDS))
until "$TEMPORAL_BIN" operator cluster health --address "$ADDRESS" >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    log "Temporal at $ADDRESS not serving after ${WAIT_SECONDS}s"
    exit 1
  fi
  log "waiting for Temporal at $ADDRESS"
  sleep 2
done

# temporalio/server creates no namespace; a second registrar racing this one is fine.
if ! "$TEMPORAL_BIN" operator namespace describe --address "$ADDRESS" \
  --namespace "$NAMESPACE" >/dev/null 2>&1; then
  if output="$("$TEMPORAL_BIN" operator namespace create --address "$ADDRESS" \
    --namespace "$NAMESPACE" --retention "$RETENTION" 2>&1)"; then
    log "created namespace '$NAMESPACE' (retention $RETENTION)"
  elif ! grep -qi "already" <<<"$output"; then
    log "could not create namespace '$NAMESPACE': $output"
    exit 1
  fi
fi

# A new namespace reaches every frontend's cache within seconds: wait for it.
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
