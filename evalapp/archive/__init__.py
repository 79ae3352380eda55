"""Move or back up one study: a zip that another server imports as the same study, row for row.

`study_export` writes `manifest.json` (format version, app version, this site, the study's origin, per
table its columns, row count and sha256) and one JSON-lines member per table under `tables/`: the study
and its criteria, prompts, arms, responses with their provenance, generation, training and playground
runs (metadata), adapters the arms use (metadata and hashes, never weights), memberships, invitations,
consent texts and consents, calibration items, attempts and answers, assignments and gold answers,
ratings, scores and revisions, adjudications, safety reviews and decisions, the audit trail, and the
accounts involved (names and e-mail, never a password). Which tables, and in what order, is
`tables.TABLES`.

`study_import` checks every member against the manifest before it writes anything, then writes every
row in one transaction with new primary keys, foreign keys and the ids inside audit payloads remapped,
timestamps as archived. Accounts are matched by username, else by e-mail; accounts not found are created
with no usable password. A study keeps its origin (first server, id and creation time there) through
any number of moves, so a second import of it is refused unless asked for as a new copy.

Both are audited (`study.export` on the source, `study.import` on the copy, which records the origin).
Whole-site backups are `pg_dump`'s job (deploy/backup.sh); this is for one study.
"""

from .manifest import FORMAT_VERSION, ArchiveError
from .reader import ImportResult, study_import
from .writer import study_export

__all__ = ["FORMAT_VERSION", "ArchiveError", "ImportResult", "study_export", "study_import"]
