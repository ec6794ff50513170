#!/usr/bin/env bash
# Tries the README's two commands as a new user would, on a machine that has never seen the project:
# a minimal Debian bookworm root built with debootstrap from the mirror apt uses here, given only
# what a fresh machine of this kind has (a C compiler, git, qemu-utils, the rustup toolchain, CPython
# 3.11 with pip and nothing installed into it, the CA bundle), then a fresh clone of this repository's
# HEAD with ../shared beside it, then ./scripts/demo.sh and ./scripts/test.sh inside it, each timed.
#
# Not part of CI (it takes 40-60 minutes on 2 cores and about 20 GB of disk). Run it as root before
# declaring set-up, CI or Arm-stage work done:
#
#   sudo scripts/fresh-machine-check.sh                   # root under /var/tmp/ferrite-fresh, removed after
#   sudo scripts/fresh-machine-check.sh --keep            # keep the root to look around afterwards
#   sudo scripts/fresh-machine-check.sh --only demo       # demo.sh only (or: --only test)
#   FERRITE_SKIP_ARM=1 sudo -E scripts/fresh-machine-check.sh   # passed through to test.sh
#
# Only committed work is checked (the clone is of HEAD). The log of each command is kept in
# <root>/work/<name>.log and its tail is printed on failure; the exit status is non-zero if either fails.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
shared="$(cd "$repo/.." && pwd)/shared"

root=/var/tmp/ferrite-fresh
keep=0
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --only) only="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "fresh-machine-check: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$only" in ""|demo|test) ;; *) echo "fresh-machine-check: --only takes demo or test" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "fresh-machine-check: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }
[ -d "$shared" ] || { echo "fresh-machine-check: $shared missing (the datasets CI has beside the clone)" >&2; exit 2; }

t0=$SECONDS
step() { printf '[%5ds] %s\n' "$((SECONDS - t0))" "$*"; }

# What a fresh machine of this kind has besides Debian's base: the rustup toolchain (shared read-only,
# never written by a build: CARGO_HOME below is the root's own), CPython 3.11 from pyenv with pip only.
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
py_home="$(python3 -c 'import sys; print(sys.base_prefix)')"
py_version="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
for p in "$rustup_home" "$cargo_bin" "$py_home"; do
  [ -d "$p" ] || { echo "fresh-machine-check: $p missing on this machine" >&2; exit 2; }
done

mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  # Never delete through a mount that is still there (/dev, the datasets).
  if findmnt -rn -o TARGET | grep -q "^$root/"; then
    echo "fresh-machine-check: mounts remain under $root; not removing it" >&2
  elif [ "$keep" = 0 ]; then
    rm -rf "$root"
  else
    echo "fresh-machine-check: root kept at $root"
  fi
}
trap cleanup EXIT
bind() { # $1 host path, $2 path in the root, $3 "ro" for read-only
  mkdir -p "$root$2"
  mount --bind "$1" "$root$2"
  mounts+=("$root$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$root$2"; fi
}

if ! command -v debootstrap >/dev/null; then
  step "installing debootstrap (apt)"
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi
mirror=$(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
  awk '{print $2}' | grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

if findmnt -rn -o TARGET | grep -q "^$root/"; then
  echo "fresh-machine-check: mounts remain under $root from an earlier run; unmount them first" >&2
  exit 2
fi
rm -rf "$root"
mkdir -p "$root"
step "debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase \
  --include=ca-certificates,git,gcc,g++,make,libc6-dev,qemu-utils,procps \
  bookworm "$root" "$mirror" > "$root.debootstrap.log" 2>&1 ||
  { tail -20 "$root.debootstrap.log"; exit 1; }
rm -f "$root.debootstrap.log"

# The same package sources and registry settings as this machine (security updates carry
# rustc-web for the Arm build); the CA bundle is the one every client here trusts.
rm -f "$root/etc/apt/sources.list"
cp -a /etc/apt/sources.list.d/. "$root/etc/apt/sources.list.d/"
[ ! -f /etc/apt/sources.list ] || cp /etc/apt/sources.list "$root/etc/apt/sources.list"
cp /etc/apt/apt.conf.d/99* "$root/etc/apt/apt.conf.d/" 2>/dev/null || true
# Local CAs go where update-ca-certificates finds them: apt runs it again whenever a package
# brings certificates, and a bundle copied in alone would lose them then.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1 || true
fi
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$root/etc/resolv.conf"
[ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$root/etc/pip.conf"

step "toolchains: rustup (read-only), CPython $py_version with pip only"
mkdir -p "$root/root/.cargo/bin"
cp -a "$cargo_bin/." "$root/root/.cargo/bin/"
bind "$rustup_home" /root/.rustup ro
# The interpreter at its own path (its RUNPATH is absolute), without the packages installed into it
# (pip and setuptools stay, and the .pth hooks that make pip trust this network's CA).
mkdir -p "$root$py_home"
tar -C "$py_home" --exclude="lib/python$py_version/site-packages/*" -cf - . | tar -C "$root$py_home" -xf -
site="lib/python$py_version/site-packages"
for pkg in "$py_home/$site"/{pip,setuptools,pkg_resources,_distutils_hack}* "$py_home/$site"/*.pth; do
  if [ -e "$pkg" ]; then cp -a "$pkg" "$root$py_home/$site/"; fi
done
ln -sf python3 "$root$py_home/bin/python"
for pem in /etc/ssl/certs/*egress*.pem; do
  if [ -e "$pem" ]; then cp "$pem" "$root/etc/ssl/certs/"; fi
done

bind /proc /proc
bind /sys /sys
bind /dev /dev
bind /dev/pts /dev/pts
bind "$shared" /work/shared ro
step "fresh clone of $(git -C "$repo" rev-parse --short HEAD) with ../shared beside it"
git clone -q "file://$repo" "$root/work/main"

in_root() { # $1 log name, the rest: the command, run in the clone as root on the fresh machine
  local name="$1"; shift
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
    PATH="/root/.cargo/bin:$py_home/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    CURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt GIT_SSL_CAINFO=/etc/ssl/certs/ca-certificates.crt \
    PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 RUSTUP_AUTO_INSTALL=0 \
    FERRITE_SKIP_ARM="${FERRITE_SKIP_ARM:-0}" \
    /bin/bash -c 'cd /work/main && "$@"' bash "$@" > "$root/work/$name.log" 2>&1
}

status=0
run_timed() { # $1 name, the rest: the command
  local name="$1" start=$SECONDS rc=0
  shift
  step "$name: $* (log: $root/work/$name.log)"
  in_root "$name" "$@" || rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" = 0 ]; then
    step "$name: passed in $((took / 60)) min $((took % 60)) s"
  else
    step "$name: FAILED (exit $rc) after $((took / 60)) min $((took % 60)) s; the log's tail:"
    tail -25 "$root/work/$name.log"
    status=1
  fi
}
[ "$only" = test ] || run_timed demo ./scripts/demo.sh
[ "$only" = demo ] || run_timed test ./scripts/test.sh
if [ "$status" = 0 ]; then step "fresh machine: all passed"; else step "fresh machine: FAILED"; keep=1; fi
exit "$status"
