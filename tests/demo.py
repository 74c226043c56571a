"""`make demo`: the reconciler at work against a private fail2ban-server and the local Cloudflare emulator.

Starts both on this machine (fail2ban in /tmp/f2b-*, the emulator on 127.0.0.1), bans a handful of addresses,
then runs the real `reconcile` command: --report, a run, --report again, and a run after an unban.
Everything is stopped and removed at the end, whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.cf_emulator import TOKEN, ZONE_ID, CloudflareEmulator
from tests.f2b_server import F2B, running_f2b
from tests.harness import RECONCILE, toml_value

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


def write_config(workdir: Path, f2b: F2B, cf: CloudflareEmulator) -> Path:
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
        "policy": {"host_id": "demo-host"},
        "run": {"lock_file": str(workdir / "reconcile.lock")},
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
        CloudflareEmulator() as cf,
    ):
        workdir = Path(tmp)
        config = write_config(workdir, f2b, cf)
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

        step("1. What would it do? (changes nothing)")
        reconcile(config, "--report")
        step("2. Reconcile")
        reconcile(config)
        step("3. Report again: everything in step")
        reconcile(config, "--report")
        step("4. fail2ban unbans 45.155.205.233; reconcile expires exactly that rule")
        f2b.client("unban", "45.155.205.233")
        reconcile(config)

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
