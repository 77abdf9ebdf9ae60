#!/usr/bin/env bash
# Install what a throwaway local WordPress needs (tests, `igny8` demo), idempotently.
#
# The Apache-free route: Debian's `wordpress` package depends on `apache2 | httpd`, which we
# do not want (it may start on :80), so we install only PHP and WordPress's library
# dependencies, then download Debian's `wordpress` (and its default theme) and unpack them
# with `dpkg-deb -x` into a folder of our own. cli/wordpress.py copies that tree into a
# data folder per instance and serves it with PHP's built-in server on the local MariaDB.
#
# Usage: deploy/wordpress/setup.sh [--check]
#   --check   print what is missing and exit 1 if anything is; change nothing.
# Environment:
#   IGNY8_WORDPRESS_DIST_ROOT  where the .debs are unpacked (default /opt/igny8-wordpress);
#                              the tree is then $IGNY8_WORDPRESS_DIST_ROOT/usr/share/wordpress.
# A second run with everything present does nothing and needs no network.
set -euo pipefail

DIST_ROOT="${IGNY8_WORDPRESS_DIST_ROOT:-/opt/igny8-wordpress}"
PACKAGES=(php8.2-cli php8.2-mysql php8.2-gd php-getid3 libjs-cropper libjs-underscore)
DEBS=(wordpress wordpress-theme-twentytwentythree)
TREE="$DIST_ROOT/usr/share/wordpress"
STAMP="$DIST_ROOT/.igny8-unpacked"

log() { echo "[wordpress setup] $*"; }

missing_packages() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      echo "$pkg"
    fi
  done
}

tree_ready() {
  # Debian's own install counts too; otherwise our unpacked copy, complete (stamp written last).
  [[ -f /usr/share/wordpress/wp-load.php ]] || [[ -f "$STAMP" && -f "$TREE/wp-load.php" ]]
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root (or sudo) for: $*"
    return 1
  fi
}

install_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "packages present: ${PACKAGES[*]}"
    return
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package lists may be absent or stale on a fresh machine; refresh once, then install.
  local out
  out="$(mktemp)"
  if ! { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"; } >"$out" 2>&1; then
    tail -n 30 "$out"
    rm -f "$out"
    return 1
  fi
  rm -f "$out"
}

unpack_wordpress() {
  if tree_ready; then
    log "WordPress tree present: $( [[ -f /usr/share/wordpress/wp-load.php ]] && echo /usr/share/wordpress || echo "$TREE")"
    return
  fi
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand now: $work is local to this function
  trap "rm -rf '$work'; trap - RETURN" RETURN
  chmod 755 "$work"  # apt's download sandbox user must be able to write here
  log "downloading ${DEBS[*]}"
  (cd "$work" && apt-get download -qq "${DEBS[@]}" 2>&1 | grep -v 'unsandboxed' || true)
  local debs=("$work"/*.deb)
  if [[ ! -f "${debs[0]}" ]]; then
    log "apt-get download fetched nothing (try: apt-get update)"
    return 1
  fi
  mkdir -p "$work/root"
  local deb
  for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$work/root"; done
  # Swap in whole, so a half-unpacked tree is never taken for a complete one.
  as_root mkdir -p "$(dirname "$DIST_ROOT")"
  as_root rm -rf "$DIST_ROOT.new"
  as_root mv "$work/root" "$DIST_ROOT.new"
  as_root rm -rf "$DIST_ROOT"
  as_root mv "$DIST_ROOT.new" "$DIST_ROOT"
  dpkg-deb -f "${debs[0]}" Version | as_root tee "$STAMP" >/dev/null
  log "unpacked WordPress $(cat "$STAMP") into $TREE"
}

check_only() {
  local missing status=0
  mapfile -t missing < <(missing_packages)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "missing packages: ${missing[*]}"
    status=1
  fi
  if ! tree_ready; then
    echo "missing WordPress tree: $TREE"
    status=1
  fi
  return $status
}

main() {
  if [[ "${1:-}" == "--check" ]]; then
    check_only
    return
  fi
  local started=$SECONDS
  install_packages
  unpack_wordpress
  log "ready in $((SECONDS - started)) s"
}

main "$@"
