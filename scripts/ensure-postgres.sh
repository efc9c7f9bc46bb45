#!/usr/bin/env bash
# Starts the machine's PostgreSQL (Debian's pg_ctlcluster) if nothing answers on
# 127.0.0.1:5432, and makes sure the `postgres` user can log in with password `postgres`
# over TCP. Prints the DATABASE_URL the tests use. Idempotent.
set -euo pipefail

PGPORT="${PGPORT:-5432}"
url="postgres://postgres:postgres@127.0.0.1:${PGPORT}/postgres"

if ! command -v pg_isready >/dev/null 2>&1; then
  if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "PostgreSQL is not installed; installing it" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
fi

isready() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -h 127.0.0.1 -p "$PGPORT" -q
  else
    (exec 3<>"/dev/tcp/127.0.0.1/${PGPORT}") 2>/dev/null
  fi
}

if ! isready; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | grep -q "^${version} main" || pg_createcluster "$version" main >&2
    pg_ctlcluster "$version" main start >&2
  else
    echo "cannot start PostgreSQL: pg_ctlcluster not found" >&2
    exit 1
  fi
  for _ in $(seq 1 60); do
    isready && break
    sleep 0.5
  done
  isready || { echo "PostgreSQL did not start" >&2; exit 1; }
fi

# Password login over TCP for the tests (idempotent; needs local superuser access).
if command -v psql >/dev/null 2>&1 && id postgres >/dev/null 2>&1; then
  su postgres -c "psql -q -p ${PGPORT} -c \"alter user postgres password 'postgres'\"" >/dev/null 2>&1 || true
fi

echo "$url"
