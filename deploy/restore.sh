#!/usr/bin/env bash
# Restore a dump written by deploy/backup.sh into an empty database, all or nothing.
#
#   deploy/restore.sh IN.dump postgres://user@host:5432/empatheval_restored
#
# The target database must exist and hold no tables (createdb it first): restoring over a live site
# would mix two states. The restore runs in one transaction and stops at the first error, so it either
# completes or leaves the target empty. Afterwards, point DATABASE_URL at it and run
# `manage.py migrate` (a no-op for a dump of the same version; it applies newer migrations otherwise).
set -euo pipefail

dump="${1:?Usage: restore.sh IN.dump TARGET_DATABASE_URL}"
url="${2:?Usage: restore.sh IN.dump TARGET_DATABASE_URL}"
[ -r "$dump" ] || { echo "Cannot read $dump." >&2; exit 2; }

tables="$(psql --no-psqlrc --tuples-only --no-align --dbname="$url" \
  --command="SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")"
if [ "$tables" != "0" ]; then
  echo "The target database already has $tables tables; restore into an empty one (createdb a new database)." >&2
  exit 1
fi
pg_restore --exit-on-error --single-transaction --no-owner --no-privileges --dbname="$url" "$dump"
echo "Restored $dump into $(psql --no-psqlrc --tuples-only --no-align --dbname="$url" --command='SELECT current_database()')."
