#!/bin/sh
# Installs reconcile system-wide: `make install-system` (as root), or `sh cron/install.sh`. The Debian
# package (`make deb`, debian/) installs the same files from cron/, with the command in /usr/bin.
#
#   the package     -> a dedicated venv $VENV (/opt/reconcile), command $PREFIX/bin/reconcile (a symlink)
#   systemd units   -> /etc/systemd/system/reconcile.{service,timer} (not enabled: configure first)
#   fail2ban action -> /etc/fail2ban/action.d/cloudflare-reconcile{,-kick}.conf
#   jail example    -> /etc/fail2ban/jail.d/cloudflare-reconcile.local.example (inert until copied to .local)
#   configuration   -> /etc/fail2ban/cloudflare-reconcile.toml, only if absent (never overwritten)
#   cron drop-in    -> /etc/cron.d/reconcile, only with WITH_CRON=1 (the systemd timer is the default)
#   ASN cache dir   -> /var/cache/reconcile (0700; systemd's CacheDirectory= would make it, cron needs it)
#   (the lock's directory, /run/reconcile, is on a tmpfs: the unit or the command itself creates it)
#
# Running it again upgrades the package and the shipped files and keeps the configuration.
# Variables: DESTDIR (install into a staging tree, e.g. for packaging or tests; no root needed),
# PREFIX (/usr/local), VENV (/opt/reconcile), PYTHON (/usr/bin/python3), PACKAGE (what pip installs:
# this source tree, or a built wheel), PIP_ARGS (extra pip options, e.g. "--no-index --find-links
# /srv/wheels" offline), WITH_CRON (1: install the cron drop-in),
# ENABLE_TIMER (1: enable and start the timer now; only on a live systemd and without DESTDIR).
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
VENV=${VENV:-/opt/reconcile}
PYTHON=${PYTHON:-/usr/bin/python3}
PACKAGE=${PACKAGE:-$SRC}
PIP_ARGS=${PIP_ARGS:-}
WITH_CRON=${WITH_CRON:-0}
ENABLE_TIMER=${ENABLE_TIMER:-0}
UNIT_DIR=/etc/systemd/system
F2B_DIR=/etc/fail2ban
CONFIG=$F2B_DIR/cloudflare-reconcile.toml
COMMAND=$PREFIX/bin/reconcile

say() { printf 'install-system: %s\n' "$*"; }
die() { printf 'install-system: error: %s\n' "$*" >&2; exit 1; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo make install-system), or set DESTDIR to stage into a directory"
fi
case "$PREFIX$VENV" in
    *[!A-Za-z0-9/._-]*) die "PREFIX and VENV must be plain paths (letters, digits, / . _ -)" ;;
esac

# 1. The package, in its own venv. Not into Debian's system Python: that interpreter belongs to apt
# (PEP 668 marks it externally managed, and pip upgrading requests/urllib3 there could break fail2ban
# itself, which runs on it); a venv keeps our dependencies apart and is removed with one rm -rf.
if [ ! -x "$DESTDIR$VENV/bin/python" ]; then
    say "creating the venv $VENV with $PYTHON"
    "$PYTHON" -m venv "$DESTDIR$VENV" \
        || die "$PYTHON -m venv failed (on Debian: apt-get install python3-venv)"
fi
say "installing $PACKAGE"
# 0.1 was published as the distribution "reconcile" (a name taken on the package index by another
# project); both own reconcile/, so the old one goes first.
if "$DESTDIR$VENV/bin/python" -m pip show --quiet reconcile >/dev/null 2>&1; then
    "$DESTDIR$VENV/bin/python" -m pip uninstall --quiet --yes reconcile
fi
# --force-reinstall --no-deps first: a rebuilt package of the same version must replace the old one;
# then the dependencies, upgraded only when needed.
# shellcheck disable=SC2086  # PIP_ARGS is a list of options
"$DESTDIR$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS \
    --force-reinstall --no-deps "$PACKAGE"
# shellcheck disable=SC2086
"$DESTDIR$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS "$PACKAGE"
if [ -n "$DESTDIR" ]; then
    # pip and venv wrote the staging path ($DESTDIR$VENV) into the scripts' "#!" lines, activate and
    # pyvenv.cfg; once the tree is in place they must name $VENV. (grep -rIF: text files, no symlinks.)
    grep -rlIF -- "$DESTDIR$VENV" "$DESTDIR$VENV/bin" "$DESTDIR$VENV/pyvenv.cfg" | while read -r file; do
        sed -i "s|$DESTDIR$VENV|$VENV|g" "$file"
    done
fi
install -d -m 0755 "$DESTDIR$PREFIX/bin"
# Relative, so the link also resolves inside a DESTDIR tree.
ln -sfn "$(realpath -m --relative-to="$PREFIX/bin" "$VENV/bin/reconcile")" "$DESTDIR$COMMAND"

# 2. Shipped files: ours, replaced on every install (local changes go in drop-ins / .local files).
# The command path is written into the unit and the cron line, so PREFIX stays consistent.
install -d -m 0755 "$DESTDIR$UNIT_DIR" "$DESTDIR$F2B_DIR/action.d" "$DESTDIR$F2B_DIR/jail.d"
sed "s|/usr/local/bin/reconcile|$COMMAND|" "$SRC/cron/reconcile.service" > "$DESTDIR$UNIT_DIR/reconcile.service"
chmod 0644 "$DESTDIR$UNIT_DIR/reconcile.service"
install -m 0644 "$SRC/cron/reconcile.timer" "$DESTDIR$UNIT_DIR/reconcile.timer"
for action in cloudflare-reconcile cloudflare-reconcile-kick; do
    install -m 0644 "$SRC/cron/action.d/$action.conf" "$DESTDIR$F2B_DIR/action.d/$action.conf"
done
install -m 0644 "$SRC/cron/jail.d/cloudflare-reconcile.local" \
    "$DESTDIR$F2B_DIR/jail.d/cloudflare-reconcile.local.example"

# 3. The configuration: the operator's once it exists.
if [ -e "$DESTDIR$CONFIG" ] || [ -L "$DESTDIR$CONFIG" ]; then
    say "keeping the existing $CONFIG (the current example: $SRC/cron/cloudflare-reconcile.toml.example)"
else
    install -m 0644 "$SRC/cron/cloudflare-reconcile.toml.example" "$DESTDIR$CONFIG"
    say "wrote $CONFIG from the example: set zone_ids or account_id there"
fi
# The token's directory: root only. The token itself is the operator's to write.
[ -d "$DESTDIR/etc/cloudflare" ] || install -d -m 0700 "$DESTDIR/etc/cloudflare"
# [enrich] cache_file's directory, root only, for cron runs (under systemd, CacheDirectory= adopts it).
install -d -m 0700 "$DESTDIR/var/cache/reconcile"

# 4. cron, only when asked: Debian's cron skips /etc/cron.d names with a dot, hence "reconcile".
if [ "$WITH_CRON" = 1 ]; then
    install -d -m 0755 "$DESTDIR/etc/cron.d"
    sed "s|/usr/local/bin/reconcile|$COMMAND|g" "$SRC/cron/reconcile.cron" > "$DESTDIR/etc/cron.d/reconcile"
    chmod 0644 "$DESTDIR/etc/cron.d/reconcile"
    say "installed /etc/cron.d/reconcile (runs every 2 minutes; the timer is then not needed)"
    if [ -d /run/systemd/system ]; then
        # The cron line stands aside where systemd runs (cron/reconcile.cron): the timer is the scheduler.
        say "note: systemd runs here, so the cron line does nothing: enable reconcile.timer instead"
    fi
fi

# 5. systemd: only a running systemd can be told about new units (not in a container or a DESTDIR).
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$ENABLE_TIMER" = 1 ]; then
        systemctl enable --now reconcile.timer
        say "enabled and started reconcile.timer"
    fi
else
    say "systemd is not running here (or DESTDIR is set): units installed, not reloaded or enabled"
fi

say "done. Next: put the API token in /etc/cloudflare/API_TOKEN (chmod 600), edit $CONFIG,"
say "check with: $COMMAND --report; then: systemctl enable --now reconcile.timer"
