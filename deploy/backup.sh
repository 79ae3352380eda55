#!/usr/bin/env bash
# Back up the site's whole PostgreSQL database (every study, account and run) in pg_dump's custom format:
# compressed, and restorable whole or table by table with pg_restore (deploy/restore.sh).
#
#   DATABASE_URL=postgres://user@host:5432/empatheval deploy/backup.sh [OUT.dump]
#
# OUT.dump defaults to empatheval-<UTC time>.dump here. The dump is read back whole (every table's data
# decompressed, nothing written) before it gets its name, so a truncated file never looks like a backup. It holds
# personal data (e-mail addresses, consent records): it is written readable by its owner only.
# Adapter weights and other files under EMPATHEVAL_VAR_DIR are not in it: copy them beside it.
set -euo pipefail

url="${DATABASE_URL:?Set DATABASE_URL to the database to back up (postgres://user@host:port/name).}"
case "$url" in
  postgres://*|postgresql://*) ;;
  *) echo "backup.sh backs up PostgreSQL; DATABASE_URL is not a postgres:// URL." >&2; exit 2 ;;
esac
out="${1:-empatheval-$(date -u +%Y%m%dT%H%M%SZ).dump}"
part="$out.part"

umask 077
trap 'rm -f "$part"' EXIT
# --no-owner/--no-privileges: the restore may run as another role on another server.
pg_dump --format=custom --no-owner --no-privileges --file="$part" --dbname="$url"
pg_restore --file=/dev/null "$part"
mv "$part" "$out"
trap - EXIT
echo "$out"
