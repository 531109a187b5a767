"""`baton serve`: flows and pool aliases behind one OpenAI-compatible endpoint (docs/serve.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.cli.common import add_pool_argument, fail, parse_budget, pool_for
from engine.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from engine.cli.tracing import add_otel_arguments, close_observers, observers_for
from engine.serve.catalog import CatalogError
from engine.serve.keys import add_key, add_stored_key
from engine.serve.ledgers import open_ledger
from engine.serve.server import serve


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flows", metavar="DIR", help="serve every .flow in DIR as model `flow/<name>` (its pool is found from DIR)")
    add_pool_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other needs --keys)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--keys", metavar="FILE", help="require bearer keys from FILE (TOML of hashed keys and spend caps)")
    p.add_argument("--home", metavar="DIR", help="where runs and the spend ledger are kept (default $BATON_HOME or ./.baton)")
    p.add_argument("--ledger", "--db", dest="ledger", metavar="FILE|URL", default=os.environ.get("BATON_DB_URL") or None,
                   help="the spend ledger every process serving these keys shares: a SQLite file (default HOME/serve-ledger.sqlite) "
                        "or a postgresql:// URL (replicas on several machines; needs baton[postgres]); default $BATON_DB_URL")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="answer with N processes on one port (SO_REUSEPORT), sharing the ledger and the run home (default 1)")
    p.add_argument("--reload", action="store_true", help="re-read changed flow files; a broken one keeps its last good version")
    p.add_argument("--cache", action="store_true", help="answer repeated temperature-0 requests from the response cache")
    p.add_argument("--fsync", action="store_true",
                   help="fsync every run record and ledger entry (survives a power cut; a killed server loses nothing either way)")
    p.add_argument("--allow-origin", metavar="URL", action="append", default=[],
                   help="let web pages on this origin (e.g. http://localhost:3000) call the server, with CORS; repeatable "
                        "(other origins are refused: docs/security.md)")
    p.add_argument("--allow-host", metavar="NAME", action="append", default=[],
                   help="answer requests whose Host is NAME (a DNS name the server is reached by); repeatable "
                        "(by default only the address it listens on: this stops DNS rebinding)")
    p.add_argument("--new-key", metavar="NAME", help="add a key named NAME to --keys FILE (or, without it, to the --db ledger), "
                                                     "print it once, and exit")
    p.add_argument("--daily-usd", metavar="USD", help="with --new-key: the key's spend cap per UTC day")
    p.add_argument("--total-usd", metavar="USD", help="with --new-key: the key's spend cap in total")
    add_otel_arguments(p)


def run(args: argparse.Namespace) -> int:
    if args.new_key:
        if not args.keys and not args.ledger:
            return fail("--new-key needs --keys FILE, or --db URL to store the key in the shared ledger", EXIT_USAGE)
        daily, total = parse_budget(args.daily_usd, "--daily-usd"), parse_budget(args.total_usd, "--total-usd")
        if args.keys:
            token, where = add_key(args.keys, args.new_key, daily, total), args.keys
        else:
            ledger = open_ledger(args.ledger)
            try:
                token, where = add_stored_key(ledger, args.new_key, daily, total), "the shared ledger (every replica reads it)"
            finally:
                ledger.close()
        print(token)
        print(f"baton serve: key `{args.new_key}` added to {where} (only its hash is stored; this is the only time it is shown)",
              file=sys.stderr)
        return EXIT_OK
    if args.flows and not Path(args.flows).is_dir():
        return fail(f"--flows {args.flows}: no such folder", EXIT_USAGE)
    pool = pool_for(args, Path(args.flows) / "x.flow" if args.flows else None)
    observers = observers_for(args)
    if isinstance(observers, str):
        return fail(observers, EXIT_USAGE)
    try:
        serve(pool, args.flows, host=args.host, port=args.port, keys_file=args.keys, home=args.home, reload=args.reload,
              ledger=args.ledger, cache=args.cache, fsync=args.fsync, announce=lambda line: print(line, file=sys.stderr, flush=True),
              observers=observers, allow_origins=args.allow_origin, allow_hosts=args.allow_host, workers=args.workers)
    except CatalogError as err:
        print(str(err), file=sys.stderr)
        return fail("the server did not start: the flows above do not check", EXIT_FAILED)
    finally:
        close_observers(observers)
    return EXIT_OK
