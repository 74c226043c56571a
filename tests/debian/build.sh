#!/bin/sh
# `make deb`: builds the Debian package (debian/) into dist/, with Debian's own tools, then runs lintian.
#
# dpkg-buildpackage writes its results next to the source tree, so it builds a copy of this tree (the
# files git tracks or would track: no venv, no caches) in a temporary directory, and only the results are
# moved to dist/. Missing build dependencies (debian/control's Build-Depends) and lintian are installed
# first when this runs as root.
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DIST=$SRC/dist
say() { printf 'make deb: %s\n' "$*"; }

need=""
command -v dpkg-buildpackage >/dev/null 2>&1 || need="$need dpkg-dev"
command -v lintian >/dev/null 2>&1 || need="$need lintian"
if ! (cd "$SRC" && dpkg-checkbuilddeps >/dev/null 2>&1); then
    need="$need $(cd "$SRC" && dpkg-checkbuilddeps 2>&1 | sed -n 's/.*Unmet build dependencies: //p' \
        | sed 's/([^)]*)//g')"
fi
if [ -n "$(echo "$need" | tr -d ' ')" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "make deb: missing Debian packages:$need (run as root, or: sudo apt-get install$need)" >&2
        exit 1
    fi
    say "installing$need"
    apt-get update -qq
    # shellcheck disable=SC2086  # a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
(cd "$SRC" && git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf -) | tar -xf - -C "$work/src"
say "building in $work"
# Debian's own python3: a python3.11 first in PATH (pyenv, a venv) would build with another interpreter.
(cd "$work/src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc --build=full) > "$work/build.log" 2>&1 || {
    tail -40 "$work/build.log" >&2
    echo "make deb: dpkg-buildpackage failed (the last 40 lines of its log above)" >&2
    exit 1
}
mkdir -p "$DIST"
for file in "$work"/*.deb "$work"/*.dsc "$work"/*.tar.* "$work"/*.changes "$work"/*.buildinfo; do
    [ -e "$file" ] && mv "$file" "$DIST/"
done
changes=$(ls "$DIST"/fail2ban-cloudflare-reconcile_*_"$(dpkg --print-architecture)".changes)
say "built $(cd "$DIST" && ls fail2ban-cloudflare-reconcile_*_all.deb)"
# lintian: the source and the binary package; no error and no warning (overrides are in debian/, each with
# its reason). --fail-on warning makes a warning fail the build.
lintian --fail-on error,warning --display-info "$changes"
say "lintian: no error, no warning"
