#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1 before the tests: start them when installed,
# install them with apt when run as root and missing, else stop at once with the command to run.
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
wait_for() { for _ in $(seq 1 30); do "$1" && return 0; sleep 1; done; return 1; }
root() { [ "$(id -u)" = 0 ]; }

if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null; then
    if root; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      echo "The tests need PostgreSQL on 127.0.0.1:5432: sudo apt-get install postgresql"; exit 1
    fi
  fi
  if root; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  else
    echo "PostgreSQL is installed but not answering on 127.0.0.1:5432. Start it with:"
    echo "  sudo pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql 2>/dev/null | head -1) main start"
    exit 1
  fi
  wait_for pg_up || { echo "PostgreSQL did not start on 127.0.0.1:5432"; exit 1; }
fi
# The test settings connect as postgres without a password (trust auth on localhost, as CI has it).
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc "select 1" >/dev/null 2>&1; then
  echo "PostgreSQL answers but refuses user postgres without a password on 127.0.0.1; allow trust auth for"
  echo "local TCP connections in pg_hba.conf, or set DATABASE_URL=postgres://USER:PASSWORD@HOST:PORT/test"
  [ -n "${DATABASE_URL:-}" ] || exit 1
fi

if ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    if root; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
      echo "The tests need Redis on 127.0.0.1:6379: sudo apt-get install redis-server"; exit 1
    fi
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for redis_up || { echo "Redis did not start on 127.0.0.1:6379"; exit 1; }
fi
