#!/bin/sh
# Installs the Debian packages the tests need (fail2ban, systemd-analyze, groff, man) when they are missing.
# Never starts the system fail2ban service: a temporary policy-rc.d forbids it during the install.
set -eu
need=""
command -v fail2ban-server >/dev/null 2>&1 || need="$need fail2ban"
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
command -v groff >/dev/null 2>&1 || need="$need groff-base"  # tests/e2e/test_manpage.py
command -v man >/dev/null 2>&1 || need="$need man-db"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$need (run as root, or: sudo apt-get install$need)" >&2
    exit 1
fi
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    guard=1
fi
trap '[ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
