"""Which ledger a `--db` names: a `postgresql://` URL (replicas on several machines) or a SQLite file (one machine).

Apart from `engine.serve.ledger` so that PostgreSQL's backend, which builds on it, is imported only when a URL asks
for it (and only with the `postgres` extra installed).
"""

from __future__ import annotations

from pathlib import Path

from engine.serve.ledger import Ledger, LedgerError, SqliteLedger

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_ledger(url_or_path: str | Path, fsync: bool = False, migrate: bool = True) -> Ledger:
    """The ledger at a `postgresql://` URL (needs `baton[postgres]`) or in a SQLite file, migrated to the current schema
    unless `migrate` is False."""
    text = str(url_or_path)
    if text.startswith(POSTGRES_SCHEMES):
        try:
            from engine.serve.ledger_pg import PostgresLedger  # only with the extra installed, only when asked for
        except ImportError:
            raise LedgerError("a postgresql:// ledger needs the postgres extra: pip install 'baton[postgres]'") from None
        return PostgresLedger(text, migrate=migrate)
    return SqliteLedger(url_or_path, fsync=fsync, migrate=migrate)
