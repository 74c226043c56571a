"""docs/reconcile.8, the manual page the Debian package installs, against what the command really is:
every option of `reconcile --help` (and no other), every exit code, the default paths, every environment
variable the code reads, and examples that the command line accepts. Its rendering is checked by groff in
tests/e2e/test_manpage.py and by lintian in `make deb`.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from reconcile import cli, errors
from reconcile.config import DEFAULT_PATH
from reconcile.config_keys import CloudflareSection, EnrichSection, RunSection

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "reconcile.8"


def plain(roff: str) -> str:
    """Roff text as read: escapes and font changes gone, the quotes of macro arguments too."""
    text = re.sub(r"\\f[BIRP]|\\%|\\&", "", roff)
    return text.replace("\\-", "-").replace("\\ ", " ").replace('"', "")


def sections() -> dict[str, list[str]]:
    """.SH name -> its source lines (comments dropped)."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in PAGE.read_text().splitlines():
        if line.startswith('.\\"'):
            continue
        if line.startswith(".SH "):
            current = found.setdefault(line[4:].strip('"'), [])
        else:
            current.append(line)
    return found


def tags(section: str) -> list[str]:
    """The tag line of every .TP entry of a section, as read."""
    lines = sections()[section]
    return [plain(re.sub(r"^\.\w+ ?", "", lines[i + 1])) for i, line in enumerate(lines) if line == ".TP"]


def help_options() -> dict[str, str | None]:
    """Every option string of the parser -> what the man page must show after it (metavar or choices)."""
    options: dict[str, str | None] = {}
    for action in cli.parser()._actions:
        shown = action.metavar or ("|".join(action.choices) if action.choices else None)
        for option in action.option_strings:
            options[option] = None if action.nargs == 0 else str(shown)
    return options


def test_the_page_has_the_sections_of_a_manual_page() -> None:
    assert list(sections())[:4] == ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS"]
    for name in ("EXIT STATUS", "FILES", "ENVIRONMENT", "EXAMPLES", "SEE ALSO"):
        assert name in sections(), name
    # Section 8 (a command for root); no version here: reconcile/__init__.py holds the only one.
    assert re.search(r"^\.TH RECONCILE 8 \d{4}-\d\d-\d\d reconcile ", PAGE.read_text(), re.M)
    assert plain(sections()["NAME"][0]).startswith("reconcile - ")


def test_every_option_of_help_and_no_other() -> None:
    wanted = help_options()
    documented: dict[str, str | None] = {}
    for tag in tags("OPTIONS"):
        words = tag.replace(",", " ").split()
        for index, word in enumerate(words):
            if word.startswith("-"):
                after = words[index + 1] if index + 1 < len(words) else None
                documented[word] = None if after is None or after.startswith("-") else after
    assert set(documented) == set(wanted), set(documented) ^ set(wanted)
    for option, shown in wanted.items():
        assert documented[option] == shown, (
            f"{option}: the page shows {documented[option]!r}, --help {shown!r}"
        )


def test_the_synopsis_names_every_option_but_help() -> None:
    synopsis = plain("\n".join(sections()["SYNOPSIS"]))
    for action in cli.parser()._actions:
        if "--help" in action.option_strings:
            continue
        shown = [
            o for o in action.option_strings if re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", synopsis)
        ]
        assert shown, action.option_strings  # one of its spellings (-v for -v/--verbose)


def test_every_exit_code_and_no_other() -> None:
    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert codes == {0, 1, 2, 3, 4}
    assert {int(tag) for tag in tags("EXIT STATUS")} == codes
    epilog = cli.parser().epilog or ""
    assert {int(code) for code in re.findall(r"(?:: |; )(\d) ", epilog)} == codes  # --help says the same


def test_the_default_paths() -> None:
    files = {path for tag in tags("FILES") for path in re.findall(r"/[\w./-]+", tag)}
    cloudflare = CloudflareSection()
    for default in (
        DEFAULT_PATH,
        cloudflare.api_token_file,
        cloudflare.zone_id_file,
        RunSection().lock_file,
        EnrichSection().cache_file,
    ):
        assert str(default) in files, default
    # What the package installs (debian/rules, debian/examples), each as the package names it.
    rules = (REPO / "debian" / "rules").read_text()
    for path in sorted(files):
        if path.startswith(("/lib/", "/etc/cron.d/", "/etc/fail2ban/action.d/", "/etc/fail2ban/jail.d/")):
            installed = path.replace("/etc/cron.d/fail2ban-cloudflare-reconcile", "/etc/cron.d/$(PKG)")
            assert Path(installed).name in rules, path
    examples = plain("\n".join(sections()["FILES"]))
    for example in (REPO / "debian" / "examples").read_text().split():
        assert Path(example).name in examples, example


def environment_read() -> set[str]:
    """Every variable the code reads: env.get("X"), environ.get("X"), os.environ["X"], os.getenv("X")."""
    names = set()
    for path in (REPO / "reconcile").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                owner = ast.unparse(node.func.value)
                reads = node.func.attr == "get" and re.search(r"env|environ", owner)
                first = node.args[0]
                if (reads or node.func.attr == "getenv") and isinstance(first, ast.Constant):
                    names.add(str(first.value))
            elif (
                isinstance(node, ast.Subscript)
                and ast.unparse(node.value) in ("os.environ", "environ")
                and isinstance(node.slice, ast.Constant)
            ):
                names.add(str(node.slice.value))
    return names


def test_every_environment_variable_the_code_reads() -> None:
    read = environment_read()
    assert {"CREDENTIALS_DIRECTORY", "CLOUDFLARE_API_TOKEN", "JOURNAL_STREAM"} <= read  # the finder works
    documented = {name for tag in tags("ENVIRONMENT") for name in re.findall(r"[A-Z_]{2,}", tag)}
    assert read <= documented, read - documented


def examples() -> list[list[str]]:
    lines, inside = [], False
    for line in sections()["EXAMPLES"]:
        if line == ".EX":
            inside = True
        elif line == ".EE":
            inside = False
        elif inside:
            lines.append(shlex.split(plain(line)))
    return lines


def test_the_examples_are_command_lines_the_parser_accepts() -> None:
    ours = [argv for argv in examples() if argv[0] == "reconcile"]
    assert {"--check", "--report", "--explain"} <= {word for argv in ours for word in argv}
    for argv in ours:
        try:
            cli.parser().parse_args(argv[1:])
        except SystemExit as stopped:  # argparse's usage error
            pytest.fail(f"{shlex.join(argv)}: exit {stopped.code}")
    others = [argv for argv in examples() if argv[0] != "reconcile"]
    assert ["systemctl", "enable", "--now", "reconcile.timer"] in others
