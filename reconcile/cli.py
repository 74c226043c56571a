"""Command line (DESIGN §7): parse, set up, run, render, exit with the documented code.

Start-up: only the standard library and reconcile's light modules are imported at the top, so that
`--version`, `--help` and a usage error answer at once. The modules a command needs (requests,
prometheus_client, tabulate, dateutil behind them) are imported inside the functions that use them; their
types are named once, in the TYPE_CHECKING block.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from reconcile import __version__
from reconcile import config as config_mod
from reconcile import log as log_mod
from reconcile.errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, ReconcileError

if TYPE_CHECKING:  # annotations only: importing them at run time would cost --version ~0.2 s
    from concurrent.futures import Future

    from reconcile.cloudflare.credentials import Credentials
    from reconcile.config import Config
    from reconcile.core.model import Fail2banState
    from reconcile.core.render import Selection
    from reconcile.run import Outcome

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
    command = p.add_mutually_exclusive_group()
    command.add_argument(
        "--report", action="store_true", help="read and plan, change nothing, print the plan on stdout"
    )
    command.add_argument(
        "--check",
        action="store_true",
        help="check the set-up (config, token, scopes, fail2ban's actions, paths, clock), change nothing; "
        "exit 1 when a check fails",
    )
    command.add_argument(
        "--explain",
        type=_ip_address,
        metavar="IP",
        help="everything about one address: its bans, the rules that cover it, what the next run would do",
    )
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default=None,
        help="output on stdout: table (default for --report, --check, --explain) or JSON, also for a run",
    )
    p.add_argument(
        "--action",
        dest="actions",
        action="append",
        type=_actions,
        metavar="LIST",
        help="with --report: show only these actions (comma-separated: add,renew,expire,keep,foreign,skip)",
    )
    p.add_argument(
        "--jail",
        dest="jails",
        action="append",
        type=_jails,
        metavar="NAME",
        help="with --report: show only these jails' rows (repeat it, or comma-separate the names)",
    )
    p.add_argument("--force", action="store_true", help="apply a plan the expiry safety check refuses")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="log every API request and planned change"
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    p.add_argument("--version", action="version", version=f"reconcile {__version__}")
    return p


def _ip_address(value: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]:
    """The address --explain reads, as a run reads a ban (core/merge.read_address), and how it was read."""
    from reconcile.core.merge import read_address

    try:
        return read_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (give one IPv4 or IPv6 address, e.g. 203.0.113.7)") from None


def _actions(value: str) -> frozenset[str]:
    from reconcile.core.changes import Action  # only when --action is given: plan pulls in dateutil

    known = [str(action) for action in Action]
    names = _names(value)
    unknown = sorted(names - set(known))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown action {', '.join(map(repr, unknown)) or repr(value)} (choose from {', '.join(known)})"
        )
    return names


def _jails(value: str) -> frozenset[str]:
    names = _names(value)
    if not names:
        raise argparse.ArgumentTypeError(f"no jail name in {value!r}")
    return names


def _names(value: str) -> frozenset[str]:
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def selection(args: argparse.Namespace) -> Selection:
    """The --action / --jail filters as the renderer's value (repeats and comma lists together)."""
    from reconcile.core.changes import Action
    from reconcile.core.render import Selection

    return Selection(
        actions=frozenset(Action(name) for names in args.actions or () for name in names),
        jails=frozenset().union(*(args.jails or ())),
    )


def run() -> NoReturn:
    """The installed command (and `python -m reconcile`): main(), then the process ends at once.

    When main() returns the run is over: output and log lines flushed, files written and closed, the lock
    released, worker threads joined. What the interpreter would still do is free its objects one by one
    (60 ms after a 40,000-ban report); the kernel takes the memory back in one go. mypy exits the same way.
    A SystemExit from main() (--help, a usage error) leaves as ever.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # None: the descriptor was closed when Python started (`2>&-`); an error: a reader gone, or a stream
        # closed since. Nothing is left to say there, and the exit code must still be the run's.
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if (args.actions or args.jails) and not args.report:
        p.error("--action and --jail filter the plan of --report: add --report")
    log_mod.setup(1 if args.verbose else -1 if args.quiet else 0)
    code: int | None = None
    try:
        code = _main(args)
        # Inside the try: buffered output reaches a closed pipe here at the latest, not at interpreter exit.
        _flush_stdout()
        return code
    except BrokenPipeError:
        return _reader_gone(code)
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


def _reader_gone(code: int | None) -> int:
    """stdout's reader has gone (`reconcile --report | head`): stop quietly, with the command's own code.

    The reader choosing to read less is no failure of the run, and a run that applied changes must still
    tell `set -o pipefail`, cron and systemd how it went (4, 1, ...). Only when the output broke off before
    the command had finished is its outcome unknown: then 1, as Python's own guidance does.
    """
    _stdout_to_devnull()
    return EXIT_FAILURE if code is None else code


def _stdout_to_devnull() -> None:
    # Later writes, and the interpreter's own flush at exit, must not fail again (that would print
    # "Exception ignored ... BrokenPipeError" and exit 120): stdout now goes nowhere.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _print(text: str) -> None:
    """print() to stdout that survives a reader which has gone: the run goes on (metrics, summary line)."""
    try:
        print(text)
        _flush_stdout()
    except BrokenPipeError:
        _stdout_to_devnull()


def _flush_stdout() -> None:
    # None: started with stdout closed (`>&-`); print() then writes nowhere, as to /dev/null, and so this.
    if sys.stdout is not None:
        sys.stdout.flush()


def _main(args: argparse.Namespace) -> int:
    # Imported only now, so that --version and --help stay fast; every command needs the credentials.
    from reconcile.cloudflare import credentials

    config = config_mod.load(args.config)
    creds = credentials.load(config)
    log_mod.redact([s for s in (creds.token, creds.key) if s])
    fmt = args.format or "table"
    if args.check:
        from reconcile.ops import check

        return check.main(config, creds, fmt)
    if args.explain is not None:
        from reconcile.ops import explain

        ip, read_as = args.explain
        return explain.main(config, creds, ip, fmt, read_as=read_as)
    from reconcile import lock

    if args.report:
        return _finish(_execute(config, creds, report=True, force=args.force), args, config)
    with lock.hold(config.run.lock_file) as held:
        if not held:
            log.info("another run holds %s; nothing to do", config.run.lock_file)
            return EXIT_OK
        outcome = _execute(config, creds, report=False, force=args.force)
        if config.metrics.textfile is not None:
            # Only then: prometheus_client is start-up time every kicked run would pay for nothing.
            from reconcile import metrics

            metrics.publish(outcome, config)
        return _finish(outcome, args, config)


def _execute(config: Config, creds: Credentials, *, report: bool, force: bool) -> Outcome:
    from concurrent.futures import ThreadPoolExecutor

    from reconcile.fail2ban.state import read_configured

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fail2ban read") as pool:
        # fail2ban's reads start first: the run's own modules (a tenth of a second of start-up) load while
        # fail2ban-client runs. The run takes the state where it always read it, errors included.
        read = prefetched_then_fresh(pool.submit(read_configured, config), read_configured)
        from reconcile.core import render
        from reconcile.run import Options, Outcome, execute

        try:
            return execute(config, creds, Options(report=report, force=force), read=read)
        except ReconcileError as exc:
            # Still an outcome: the metrics file must say that this run failed, and when.
            return Outcome(datetime.now(UTC), error=exc, stats=render.Stats(0, time.monotonic() - started))


def prefetched_then_fresh(
    first: Future[Fail2banState], fresh: Callable[[Config], Fail2banState]
) -> Callable[[Config], Fail2banState]:
    """The run's `read`: the state read ahead, once (its error, if any, where the run reads); every later
    read (the catch-up after the writes, which looks for bans that came meanwhile) a fresh one."""
    pending = [first]

    def read(config: Config) -> Fail2banState:
        return pending.pop().result() if pending else fresh(config)

    return read


def _finish(outcome: Outcome, args: argparse.Namespace, config: Config) -> int:
    from reconcile.core import render, report_json
    from reconcile.core.collector import collector_paused

    plan = outcome.plan
    fmt = args.format or ("table" if args.report else None)
    shown = selection(args)
    text: str | None = None
    # A 40,000-row report allocates a few objects per row and frees none in a cycle; the collector would
    # re-scan them all (and the plan behind them) many times over.
    with collector_paused():
        if plan is not None and fmt == "json":
            text = report_json.to_json(
                plan,
                outcome.now,
                outcome.stats,
                unsafe=outcome.unsafe,
                applied=outcome.applied,
                host_id=config.policy.host_id,
                selection=shown,
                names=outcome.names,
            )
        elif plan is not None and fmt == "table":
            text = render.table(plan, outcome.now, outcome.applied, selection=shown, names=outcome.names)
    if text is not None:
        _print(text)
    if not args.force:
        for reason in outcome.unsafe:
            log.error("%s", reason)
    if outcome.error is not None:
        # 429, budget and deadline are routine (exit 4, the next run goes on); anything else is a failure.
        level = logging.WARNING if outcome.exit_code == EXIT_PARTIAL else logging.ERROR
        log.log(level, "%s", outcome.error)
    if not args.quiet:
        if plan is not None:
            log.info("%s", render.summary(plan, outcome.stats, outcome.applied, refused=outcome.refused))
        else:
            log.info("no changes made: %s", render.summary_without_plan(outcome.stats))
    return outcome.exit_code
