"""The figures `make bench` measures, collected while it runs and written to docs/benchmarks.md at the end.

Every benchmark of bench_figures.py records its rows here (`record`); conftest.py writes the page when the
session ran every figure (a partial run, `-k`, only prints). Nothing in the page is typed by hand: the
machine, the load and every figure come from the run that wrote it.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
COMMAND = '.venv/bin/pytest -q -s -o python_files="bench_*.py" tests/benchmarks'


@dataclass
class Section:
    title: str
    intro: str
    columns: tuple[str, ...]
    rows: list[dict[str, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


SECTIONS: dict[str, Section] = {
    "steady": Section(
        "1. Requests per steady-state run against the floor",
        "`reconcile` (the installed command) over N managed rules with 1 % churn: N/200 new bans to add and "
        "N/200 rules whose IP fail2ban no longer bans, to expire. Emulator latency 50 ms per request. The "
        "floor is what the client's listing logic needs plus one request per change: it lists 1,000 per "
        "page (the largest `per_page` Cloudflare honours) and a listing ends at an empty or short page, or "
        "at `result_info.total_pages` when the answer has it (DESIGN §6): ceil(N/1000) pages here.",
        ("N rules", "changes", "requests", "floor", "pages", "wall s (median)", "runs", "target", "result"),
    ),
    "burst": Section(
        "2. Burst against the real limit (1,200 requests per 300 s)",
        "New bans all at once. (a) the per-ban way of the old scripts: one independent POST per ban from 16 "
        "parallel workers, no pacing, no retry (a 429 is a lost ban, as with the curl scripts); emulator "
        "clock unscaled (the burst takes seconds of a 300 s window either way), latency 50 ms. (b) the "
        "rules backend: `reconcile` runs (run.execute in-process, the product's Pacer) every 120 s with the "
        "defaults (requests_per_minute 200, max_requests_per_run 600, max_seconds 100) until every ban is "
        "at the edge; emulator clock 20x (time-scaled like tests/e2e/test_rate_limit.py), latency 50 ms "
        "emulated. Rate = the Pacer's achieved request rate within a run (median over runs), in emulated "
        "requests per minute.",
        (
            "way",
            "bans",
            "lost",
            "429s",
            "requests",
            "runs",
            "emulated s until all at the edge",
            "rate /min",
            "rate vs requests_per_minute",
            "target",
            "result",
        ),
    ),
    "read": Section(
        "3. fail2ban read: 10 jails x 10,000 bans",
        "A real fail2ban-server (tests/support/f2b_server.py with 5 extra jails). reconcile's read "
        "(fail2ban.read_state: the calls, parsing, fail2ban's database for the restore and zone checks) "
        "against the bare `fail2ban-client` calls it makes, one after another: `status`, one "
        "`get JAIL banip --with-time` per jail, `get dbfile`.",
        ("bans", "bare calls s (median)", "read_state s (median)", "ratio", "runs", "target", "result"),
    ),
    "plan": Section(
        "4. Planner: 100,000 bans against 50,000 rules",
        "plan.make_plan + Plan.writes, timed in a child process of its own "
        "(tests/benchmarks/planner_input.py), as each run of the product plans in a fresh process. The plan "
        "is freed after the timing: a run keeps it to the end and exits without freeing it. Of the 50,000 "
        "rules, "
        "half are up to date and half need a renewal (4 hosts: every rule carries a 4-host set; a quarter"
        " of them lack this host, which then joins); the other 50,000 bans are new. Bans started one a "
        "second over the last 28 hours, so notes and times are mostly distinct. Peak memory: "
        "tracemalloc's peak during one more, traced, pass, and the child's peak RSS before it (VmHWM).",
        (
            "case",
            "writes",
            "s (median)",
            "runs",
            "tracemalloc peak MiB",
            "child peak RSS MiB",
            "RSS growth MiB",
            "target",
            "result",
        ),
    ),
    "startup": Section(
        "5. Start-up",
        "Wall time of the installed command, medians of 10. `--report` on an empty ban list: a real "
        "fail2ban-server with no bans, the emulator with an empty zone. The fleet simulation (section 9) is "
        "stopped meanwhile, as for sections 4 and 7.",
        ("command", "ms (median)", "min ms", "max ms", "target", "result"),
    ),
    "enrich": Section(
        "6. Enrichment: 1,000 new addresses",
        "reconcile.enrich.asn.enrich against the local whois server (tests/support/whois_server.py, "
        "Team Cymru's bulk protocol over loopback). Cold: no cache file, every address asked in one bulk "
        "connection. Warm: every address fresh in the cache file, nothing asked.",
        ("cache", "addresses", "looked up", "ms (median)", "runs"),
    ),
    "report": Section(
        "7. `--report` over 40,000 bans",
        "The installed command, `reconcile --report -q` with `--format table` and `--format json`, over "
        "40,000 bans in one jail of a real fail2ban-server and an empty zone (emulator latency 50 ms), "
        "against the bare `fail2ban-client` calls it makes, one after another: `status`, "
        "`get sshd banip --with-time`, `get dbfile`. Interleaved runs, medians, with the fleet simulation "
        "(section 9, in the background of the session) stopped meanwhile: the target's constant second does "
        "not scale with the share of the machine that simulation takes.",
        (
            "format",
            "bans",
            "output MB",
            "bare reads s (median)",
            "--report s (median)",
            "target s (1.2 x bare + 1)",
            "runs",
            "result",
        ),
    ),
    "latency": Section(
        "8. Ban to edge",
        "Seconds from `set sshd banip IP` (sent over fail2ban's socket, as fail2ban-client does, without "
        "the client's start-up) to the emulator holding a rule (rules backend) or "
        "a list item (list backend, 1 s per bulk operation) for it. The stub action's kick "
        "(`systemctl start --no-block reconcile.service`) stands in as systemd runs it: the installed "
        "command starts at once, with the product's pacing defaults, against N managed entries already in "
        "step; emulator latency 50 ms per request. 30 bans one at a time, each after the previous one's run "
        "ended; then two bursts.",
        (
            "backend, managed entries",
            "bans",
            "p50 s",
            "p99 s",
            "burst: runs",
            "burst: bans left for the timer",
            "burst: p99 s of the rest",
            "target",
            "result",
        ),
    ),
    "fleet": Section(
        "9. What a fleet costs",
        "N hosts, simulated in one process (tests/support/fleet.py): each runs the product's own "
        "run.execute, "
        "planner, rules backend, transport and Pacer every 2 minutes (the timer's OnCalendar with its "
        "15 s RandomizedDelaySec) against a model of Cloudflare: one zone of 10,000 rules, the per-user "
        "quota of 1,200 requests per fixed 5-minute window told in `Ratelimit` headers, 50 ms per request. "
        "Each host bans 1,000 addresses out of the pool of 10,000 the rules are for; over one simulated hour "
        "each host bans 10 new addresses and 10 of its bans end (1 % churn), and one host gets a burst of "
        "1,000 new bans half-way. Ban to edge: from a new ban (the churn's; the burst has its own column) "
        "until a rule exists for it. Only the "
        "timer runs (no kicks).",
        (
            "hosts",
            "runs",
            "runs stopped early",
            "requests",
            "most in any 5 min",
            "mean per 5 min",
            "quota per 5 min",
            "429s",
            "new bans at the edge",
            "ban to edge p50 s",
            "ban to edge p99 s",
            "burst p99 s",
            "target",
            "result",
        ),
    ),
    "quota": Section(
        "10. Sharing the account's quota (1,200 requests per 300 s per user)",
        "The rules backend, 1,000 new bans per host, every run through run.execute in-process with the "
        "product's Pacer at its defaults (requests_per_minute 200, max_requests_per_run 600, max_seconds "
        "100, quota_reserve 0.1), on a 120 s timer, against the emulator's limiter, which states the quota "
        "on every answer (Ratelimit, Ratelimit-Policy). Emulated time runs 20x (the headers' `t` in real "
        "seconds, the product's settings scaled alike: tests/benchmarks/bench_quota.py). (a) two hosts, "
        "their runs concurrent; (b) one host with 2,000 bans while another client of the account spends "
        "half the quota at an even pace. Share of the quota = requests / (1,200 for every 300 s window "
        "the runs touched until every ban was at the edge).",
        (
            "case",
            "bans",
            "429s (hosts)",
            "429s (neighbour)",
            "requests (hosts)",
            "runs",
            "exit 4 runs",
            "emulated s until all at the edge",
            "share of quota: hosts",
            "share of quota: neighbour",
            "target",
            "result",
        ),
    ),
}


def record(section: str, **row: object) -> None:
    SECTIONS[section].rows.append(row)
    print(f"\nBENCH {section}: " + ", ".join(f"{k}={v}" for k, v in row.items()))


def note(section: str, text: str) -> None:
    SECTIONS[section].notes.append(text)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def complete() -> bool:
    return all(s.rows for s in SECTIONS.values())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fail2ban_version() -> str:
    exe = shutil.which("fail2ban-client")
    if exe is None:
        return "not installed"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False, timeout=30)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "unknown"


def _git(*args: str) -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    out = subprocess.run([git, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30)
    return out.stdout.strip() or "unknown"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


@dataclass
class Session:
    started: datetime
    load_at_start: str
    seconds: float = 0.0
    loads: list[str] = field(default_factory=list)


SESSION = Session(datetime.now(UTC), _load())


def sample_load(label: str) -> None:
    """The load average while a figure was measured (other work on this machine skews the figures)."""
    SESSION.loads.append(f"{label}: {_load()}")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render() -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (tests/benchmarks/); do not edit by hand, run it again. Every figure "
        "below "
        "was measured by the run that wrote this page, on loopback only: the Cloudflare API emulator "
        "(tests/support/cf_emulator.py), a private fail2ban-server (tests/support/f2b_server.py) and the "
        "local whois server (tests/support/whois_server.py). Timings are medians of several runs; the "
        "machine is shared, so the load average is given with them.",
        "",
        "## Machine and run",
        "",
        f"- Run: {SESSION.started:%Y-%m-%d %H:%M} UTC, commit {_git('rev-parse', '--short', 'HEAD')}, "
        f"`make bench` took {SESSION.seconds / 60:.1f} min",
        f"- CPU: {_cpu_model()}, {os.cpu_count()} cores",
        f"- OS: {platform.platform()}",
        f"- Python: {platform.python_version()} ({sys.executable})",
        f"- fail2ban: {_fail2ban_version()}",
        f"- Load average (1, 5, 15 min) at the start: {SESSION.load_at_start}; at the end: {_load()}",
        "",
        "Commands:",
        "",
        "```sh",
        "make bench        # sets up .venv and the system packages, then:",
        COMMAND,
        "```",
        "",
        f"One figure alone (the page is only rewritten when every figure ran): `{COMMAND} -k planner`.",
        "",
    ]
    for section in SECTIONS.values():
        lines += [f"## {section.title}", "", section.intro, ""]
        lines.append("| " + " | ".join(section.columns) + " |")
        lines.append("|" + "---|" * len(section.columns))
        for row in section.rows:
            lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in section.columns) + " |")
        lines.append("")
        lines += [f"- {n}" for n in section.notes]
        if section.notes:
            lines.append("")
    lines += ["## Load while measuring", ""]
    lines += [f"- {entry}" for entry in SESSION.loads]
    lines.append("")
    return "\n".join(lines)


def write(seconds: float) -> Path:
    SESSION.seconds = seconds
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render())
    return DOC
