# Shared by scripts/test and scripts/sqlx-prepare: a throwaway PostgreSQL cluster that listens
# only on a Unix socket in its own temporary directory and is removed on exit.
# Usage: source this file, call pg_temp_start; it sets PG_TEMP_URL (superuser, db `postgres`).
# `pg_temp_start durable` keeps fsync and synchronous commit on (for benchmarks), plus any
# PG_EXTRA_SETTINGS (e.g. "-c shared_preload_libraries=pg_stat_statements" to profile).

pg_find_bin() {
  local dir
  if [ -n "${PG_BIN_DIR:-}" ] && [ -x "$PG_BIN_DIR/initdb" ]; then echo "$PG_BIN_DIR"; return 0; fi
  if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin /opt/homebrew/opt/postgresql@*/bin /usr/local/opt/postgresql@*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then echo "$dir"; return 0; fi
  done
  return 1
}

pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_temp_start() {
  PG_BIN=$(pg_find_bin) || {
    echo "PostgreSQL server binaries not found: apt-get install postgresql (Debian/Ubuntu) or brew install postgresql@16 (macOS), or set PG_BIN_DIR" >&2
    return 1
  }
  PG_TEMP_DIR=$(mktemp -d /tmp/switchboard-pg.XXXXXX)
  chmod 755 "$PG_TEMP_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$PG_TEMP_DIR"
  pg_as_owner "$PG_BIN/initdb" -D "$PG_TEMP_DIR/data" --auth=trust --username=postgres -E UTF8 --no-locale >"$PG_TEMP_DIR/initdb.log" 2>&1 || {
    cat "$PG_TEMP_DIR/initdb.log" >&2; return 1
  }
  # Tests create and drop hundreds of databases: durability buys nothing there. A benchmark
  # measures what production pays for its commits, so it keeps the defaults.
  local settings="-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400"
  [ "${1:-}" = durable ] && settings="-c max_connections=200 ${PG_EXTRA_SETTINGS:-}"
  pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_TEMP_DIR/data" -l "$PG_TEMP_DIR/postgres.log" -w -t 60 \
    -o "-c listen_addresses= -c unix_socket_directories=$PG_TEMP_DIR $settings" \
    start >/dev/null || { cat "$PG_TEMP_DIR/postgres.log" >&2; return 1; }
  PG_TEMP_URL="postgres://postgres@localhost/postgres?host=$PG_TEMP_DIR"
  export PG_TEMP_URL PG_TEMP_DIR PG_BIN
}

pg_temp_stop() {
  if [ -n "${PG_TEMP_DIR:-}" ] && [ -d "$PG_TEMP_DIR/data" ]; then
    pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_TEMP_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_TEMP_DIR"
  fi
}
