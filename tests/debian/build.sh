#!/bin/sh
# `make deb`: builds the Debian package (debian/) into dist/, with Debian's own tools, then runs lintian.
#
# dpkg-buildpackage writes its results next to the source tree, so it builds a copy of this tree (the
# files git tracks or would track: no venv, no caches) in a temporary directory, and only the results are
# moved to dist/. Missing build dependencies (debian/control's Build-Depends) and lintian are installed
# first (as root).
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
DIST=$SRC/dist
say() { printf 'make deb: %s\n' "$*"; }

sh "$SRC/tests/debian/needs.sh" dpkg-dev lintian
if ! (cd "$SRC" && dpkg-checkbuilddeps >/dev/null 2>&1); then
    # debian/control's Build-Depends, as apt resolves them (debhelper-compat is a virtual package).
    [ "$(id -u)" = 0 ] || { (cd "$SRC" && dpkg-checkbuilddeps); exit 1; }
    say "installing the build dependencies"
    apt-get update -qq
    (cd "$SRC" && DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq --no-install-recommends ./ >/dev/null)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
(cd "$SRC" && git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf -) | tar -xf - -C "$work/src"
say "building in $work"
# Debian's own python3: a python3.11 first in PATH (pyenv, a venv) would build with another interpreter.
(cd "$work/src" && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc --build=full) \
    > "$work/build.log" 2>&1 || {
    tail -40 "$work/build.log" >&2
    echo "make deb: dpkg-buildpackage failed (the last 40 lines of its log above)" >&2
    exit 1
}
mkdir -p "$DIST"
rm -f "$DIST"/fail2ban-cloudflare-reconcile_*  # an older build's, which lintian would read too
for file in "$work"/*.deb "$work"/*.dsc "$work"/*.tar.* "$work"/*.changes "$work"/*.buildinfo; do
    [ -e "$file" ] && mv "$file" "$DIST/"
done
changes=$(ls "$DIST"/fail2ban-cloudflare-reconcile_*_"$(dpkg --print-architecture)".changes)
say "built $(cd "$DIST" && ls fail2ban-cloudflare-reconcile_*_all.deb)"
# lintian: the source and the binary package; no error and no warning (overrides are in debian/, each with
# its reason). --fail-on warning makes a warning fail the build.
lintian --fail-on error,warning --display-info "$changes"
say "lintian: no error, no warning"
