"""`make demo`: the reconciler at work against a private fail2ban-server and the local Cloudflare emulator.

Starts them on this machine (fail2ban in /tmp/f2b-*, the emulator and a bulk-whois server on 127.0.0.1),
bans a handful of addresses, then runs the real `reconcile` command: --check, --report, a run, --report
again, a run after an unban; then a second server (web2, with ASN enrichment) joins a rule the first one
holds, the first leaves it, and --explain tells the story; another writer's escape codes are shown as
text. Everything is stopped and removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.cf_emulator import TOKEN, ZONE_ID, CloudflareEmulator
from tests.support.f2b_server import F2B, running_f2b
from tests.support.harness import RECONCILE, toml_value
from tests.support.whois_server import WhoisServer, running_whois

BOLD, RESET = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def step(title: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}", flush=True)


def reconcile(config: Path, *args: str) -> int:
    argv = [str(RECONCILE), "--config", str(config), *args]
    print(f"$ reconcile {' '.join(args)}".rstrip(), flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    code = subprocess.run(argv, stdin=subprocess.DEVNULL, env=env, check=False).returncode
    print(f"(exit {code})", flush=True)
    return code


def write_config(
    workdir: Path, f2b: F2B, cf: CloudflareEmulator, host: str = "demo-host", whois: WhoisServer | None = None
) -> Path:
    workdir.mkdir(exist_ok=True)
    token = workdir / "API_TOKEN"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    sections: dict[str, dict[str, object]] = {
        "fail2ban": {"command": f2b.command},
        "cloudflare": {
            "api_base_url": cf.base_url,
            "api_token_file": str(token),
            "zone_ids": [ZONE_ID],
            "requests_per_minute": 6000,
        },
        "policy": {"host_id": host},
        "run": {"lock_file": str(workdir / "run" / "lock")},
    }
    if whois is not None:
        sections["enrich"] = {
            "asn": True,
            "whois_server": whois.server,
            "cache_file": str(workdir / "asn.json"),
        }
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
        for name, values in sections.items()
    )
    path = workdir / "cloudflare-reconcile.toml"
    path.write_text(text)
    return path


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="reconcile-demo-") as tmp,
        running_f2b() as f2b,
        running_f2b() as web2_f2b,
        CloudflareEmulator() as cf,
        running_whois() as whois,
    ):
        workdir = Path(tmp)
        config = write_config(workdir / "demo-host", f2b, cf)
        web2 = write_config(workdir / "web2", web2_f2b, cf, "web2", whois)
        step("fail2ban bans (a private fail2ban-server in " + str(f2b.base) + ")")
        f2b.ban("sshd", "45.155.205.233", "91.240.118.172")
        f2b.ban("nginx-limit-req", "2a06:4880:1::7", "91.240.118.172")
        f2b.ban("manual", "185.220.101.9")  # a permanent ban
        f2b.ban("recidive", "not_an_ip", "10.9.8.7")  # fail2ban takes anything; we skip these
        print(f2b.client("banned").stdout.strip())
        step("Cloudflare before (the emulator on " + cf.base_url + ")")
        cf.add_rule(
            "zone", ZONE_ID, "ip", "45.155.205.233", notes="Fail2Ban sshd"
        )  # an older curl script's rule
        cf.add_rule("zone", ZONE_ID, "ip", "198.18.7.7", mode="whitelist", notes="office VPN")  # not ours
        for rule in cf.rules("zone", ZONE_ID):
            print(f"  {rule['configuration']['value']:<16} {rule['mode']:<10} {rule['notes']!r}")

        step("0. Is the set-up right? (changes nothing)")
        reconcile(config, "--check")
        step("1. What would it do? (changes nothing)")
        reconcile(config, "--report")
        step("2. Reconcile")
        reconcile(config)
        step("3. Report again: everything in step")
        reconcile(config, "--report")
        step("4. fail2ban unbans 45.155.205.233; reconcile expires exactly that rule")
        f2b.client("unban", "45.155.205.233")
        reconcile(config)
        step("5. A second server, web2 (with ASN enrichment), bans 91.240.118.172 too: it joins the rule")
        web2_f2b.ban("sshd", "91.240.118.172", "45.142.120.10")
        reconcile(web2)
        step("6. demo-host unbans 91.240.118.172: it leaves the rule, the block stays for web2")
        f2b.client("unban", "91.240.118.172")
        reconcile(config)
        step("7. Why is 91.240.118.172 blocked? (changes nothing)")
        reconcile(web2, "--explain", "91.240.118.172")

        step("8. Another writer's note with escape codes: printed as text, never obeyed (changes nothing)")
        cf.add_rule("zone", ZONE_ID, "ip", "45.67.89.10", notes="ops \x1b[2J\x1b[31mRED\x1b[0m \u202eevil")
        reconcile(config, "--explain", "45.67.89.10")

        step("Cloudflare after")
        for rule in cf.rules("zone", ZONE_ID):
            print(f"  {rule['configuration']['value']:<16} {rule['mode']:<10} {rule['notes']!r}")
        writes = [r for r in cf.requests if r.method != "GET"]
        print(
            f"\n{len(cf.requests)} API requests in all, {len(writes)} of them writes; "
            f"{len(cf.violations)} schema violations."
        )
        if cf.violations:
            print("\n".join(cf.violations))
            return 1
    print("Stopped fail2ban and the emulator; removed their files.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
