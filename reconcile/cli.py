"""Command line (DESIGN §7): parse, set up, run, render, exit with the documented code."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from reconcile import __version__, credentials, lock, render
from reconcile import config as config_mod
from reconcile import log as log_mod
from reconcile.errors import EXIT_FAILURE, EXIT_OK, ReconcileError
from reconcile.run import Options, Outcome, execute

log = logging.getLogger("reconcile.cli")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reconcile",
        description="Make Cloudflare IP Access Rules tagged 'Blocked by fail2ban' match fail2ban's bans.",
        epilog="Exit codes: 0 done (or nothing to do, or another run holds the lock); 1 failure; "
        "2 usage or configuration error; 3 unsafe plan refused (see --force); "
        "4 partial: stopped by the request budget, the time limit or a 429, the next run continues.",
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help=f"TOML configuration (default {config_mod.DEFAULT_PATH})"
    )
    p.add_argument(
        "--report", action="store_true", help="read and plan, change nothing, print the plan on stdout"
    )
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default=None,
        help="output on stdout: the --report table (default) or JSON, also for a normal run",
    )
    p.add_argument("--force", action="store_true", help="apply a plan the expiry safety check refuses")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="log every API request and planned change"
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    p.add_argument("--version", action="version", version=f"reconcile {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log_mod.setup(1 if args.verbose else -1 if args.quiet else 0)
    try:
        return _main(args)
    except ReconcileError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as exc:  # a bug: one clear line, the traceback only when asked for
        log.error(
            "internal error: %s: %s (run with -v for the traceback)",
            type(exc).__name__,
            exc,
            exc_info=args.verbose,
        )
        return EXIT_FAILURE


def _main(args: argparse.Namespace) -> int:
    config = config_mod.load(args.config)
    creds = credentials.load(config)
    log_mod.redact([s for s in (creds.token, creds.key) if s])
    options = Options(report=args.report, force=args.force)
    if args.report:
        outcome = execute(config, creds, options)
        return _finish(outcome, args, config.host_id)
    with lock.hold(config.lock_file) as held:
        if not held:
            log.info("another run holds %s; nothing to do", config.lock_file)
            return EXIT_OK
        outcome = execute(config, creds, options)
        return _finish(outcome, args, config.host_id)


def _finish(outcome: Outcome, args: argparse.Namespace, host_id: str) -> int:
    plan = outcome.plan
    fmt = args.format or ("table" if args.report else None)
    if plan is not None and fmt == "json":
        print(
            render.to_json(
                plan,
                outcome.now,
                outcome.stats,
                unsafe=outcome.unsafe,
                applied=outcome.applied,
                host_id=host_id,
            )
        )
    elif plan is not None and fmt == "table":
        outcomes = {o.change: o for o in outcome.applied.outcomes} if outcome.applied else None
        print(render.table(plan, outcome.now, outcomes))
    for reason in outcome.unsafe:
        if not args.force:
            log.error("%s", reason)
    if outcome.error is not None:
        log.warning("%s", outcome.error)
    if plan is not None and not args.quiet:
        log.info("%s", render.summary(plan, outcome.stats, outcome.applied))
    elif plan is None and not args.quiet:
        log.info("no plan made: %d API requests in %.1f s", outcome.stats.requests, outcome.stats.seconds)
    return outcome.exit_code

