#!/bin/bash
# Build (or reuse) a Debian root with GIMP 3 for the real-GIMP tests.
#
# Usage: tests/gimp/build_root.sh ROOT [SUITE]
#   SUITE trixie (default): GIMP 3.0.x;  SUITE sid: GIMP 3.2.x.
# Reuses ROOT when its marker lists exactly this suite and the packages below; otherwise builds
# into ROOT.tmp with mmdebstrap and renames it into place, so an interrupted build never leaves a
# half root behind. Needs root (chroot, mounts) and the Debian mirror.
# Exit 0: ROOT is ready. Exit 3: cannot build here (the reason is on stderr, for the skip).
set -euo pipefail

ROOT=${1:?usage: build_root.sh ROOT [SUITE]}
SUITE=${2:-trixie}
MIRROR=${DFI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# gimp: gimp-console-3.X and gimp-3.X with Python 3; zmq/msgpack: the distro packages the installer
# relies on; xvfb/xdotool: the GUI binary for undo and dialog tests.
PKGS="gimp python3-zmq python3-msgpack xvfb xdotool"
MARK="$ROOT/.gimp-dfi-ready"
WANT="$PKGS
suite=$SUITE"

cannot() { echo "cannot build the GIMP 3 root ($SUITE): $*" >&2; exit 3; }

case "$SUITE" in
  trixie) APTOPTS=() ;;
  # The mirror's sid is a frozen snapshot whose Release file is past Valid-Until: accept it, in this root only
  # (mmdebstrap also writes the option into the root's apt.conf.d).
  sid) APTOPTS=(--aptopt='Acquire::Check-Valid-Until "false"') ;;
  *) echo "unknown suite '$SUITE' (trixie or sid)" >&2; exit 2 ;;
esac

has_gimp() { compgen -G "$1/usr/bin/gimp-console-3.*" >/dev/null; }
ready() {
  [ -f "$MARK" ] && has_gimp "$ROOT" || return 1
  local got; got=$(cat "$MARK")
  # A marker without a suite line predates suites; those roots were all trixie.
  [ "$got" = "$WANT" ] || { [ "$SUITE" = trixie ] && [ "$got" = "$PKGS" ]; }
}

if ready; then
  echo "reusing $ROOT"
  exit 0
fi
[ "$(id -u)" = 0 ] || cannot "not running as root (chroot and mmdebstrap need it)"
mkdir -p "$(dirname "$ROOT")" || cannot "cannot create $(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9
if ready; then echo "reusing $ROOT (built meanwhile)"; exit 0; fi

if ! command -v mmdebstrap >/dev/null; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap; } >/dev/null 2>&1 \
    || cannot "mmdebstrap is missing and 'apt-get install mmdebstrap' failed (no Debian mirror?)"
fi
for d in "$ROOT.tmp" "$ROOT"; do
  if findmnt -rn -o TARGET | grep -q "^$d\(/\|$\)"; then cannot "something is mounted below $d"; fi
done
rm -rf "$ROOT.tmp"
echo "building $ROOT with mmdebstrap ($SUITE: $PKGS); about 1-3 minutes"
if ! mmdebstrap --quiet --variant=apt --include="${PKGS// /,}" "${APTOPTS[@]}" \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/help/*' --dpkgopt='path-exclude=/usr/share/gtk-doc/*' \
    "$SUITE" "$ROOT.tmp" "$MIRROR" >"$ROOT.log" 2>&1; then
  tail -5 "$ROOT.log" >&2
  rm -rf "$ROOT.tmp"
  cannot "mmdebstrap failed (mirror $MIRROR unreachable?); log: $ROOT.log"
fi
has_gimp "$ROOT.tmp" || { rm -rf "$ROOT.tmp"; cannot "the $SUITE root has no gimp-console-3.*"; }
# Debian's Script-Fu test plug-in opens a display on every start; it only adds noise headless.
# (GIMP 3.2 still keeps its system plug-ins under gimp/3.0/: the folder is the API version.)
rm -rf "$ROOT.tmp"/usr/lib/*/gimp/3.*/plug-ins/test-sphere-v3
echo "$WANT" >"$ROOT.tmp/.gimp-dfi-ready"
rm -rf "$ROOT"
mv "$ROOT.tmp" "$ROOT"
echo "built $ROOT ($SUITE, $(du -sxh "$ROOT" | cut -f1))"
