"""Command line (DESIGN §7): parse, set up, run, render, exit with the documented code."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from reconcile import __version__, credentials, lock, metrics, render
from reconcile import config as config_mod
from reconcile import log as log_mod
from reconcile.config import Config
from reconcile.credentials import Credentials
from reconcile.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, ReconcileError
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
        return _finish(_execute(config, creds, options), args, config)
    with lock.hold(config.lock_file) as held:
        if not held:
            log.info("another run holds %s; nothing to do", config.lock_file)
            return EXIT_OK
        outcome = _execute(config, creds, options)
        metrics.publish(outcome, config)
        return _finish(outcome, args, config)


def _execute(config: Config, creds: Credentials, options: Options) -> Outcome:
    started = time.monotonic()
    try:
        return execute(config, creds, options)
    except ReconcileError as exc:
        # Still an outcome: the metrics file must say that this run failed, and when.
        return Outcome(exc.exit_code, error=exc, stats=render.Stats(0, time.monotonic() - started))


def _finish(outcome: Outcome, args: argparse.Namespace, config: Config) -> int:
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
                host_id=config.host_id,
            )
        )
    elif plan is not None and fmt == "table":
        print(render.table(plan, outcome.now, outcome.applied))
    if not args.force:
        for reason in outcome.unsafe:
            log.error("%s", reason)
    if outcome.error is not None:
        # 429, budget and deadline are routine (exit 4, the next run goes on); anything else is a failure.
        level = logging.WARNING if outcome.exit_code == EXIT_PARTIAL else logging.ERROR
        log.log(level, "%s", outcome.error)
    if not args.quiet:
        if plan is not None:
            log.info("%s", render.summary(plan, outcome.stats, outcome.applied))
        else:
            log.info("no changes made: %s", render.summary_without_plan(outcome.stats))
    return outcome.exit_code
