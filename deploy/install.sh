#!/usr/bin/env bash
# Installs ferrite as a boot-time service on a board (Raspberry Pi OS, Debian, JetPack/Ubuntu).
#
#   sudo deploy/install.sh --binary ./ferrite --board rpi5   install, enable and start
#   sudo deploy/install.sh --binary ./ferrite --no-start install and enable only
#   deploy/install.sh --binary ./ferrite --root /tmp/img stage into a directory tree (image builds,
#                                                          tests): no user, no udev reload, no systemctl
#
# What it does: creates the unprivileged system user `ferrite` (groups video, gpio, i2c, spi where they
# exist), installs the binary to /usr/local/bin, the config to /etc/ferrite/ferrite.toml (never
# overwriting an existing one), the systemd unit and a udev rule for gpio/i2c/spi permissions.
# Logs: `journalctl -u ferrite -f`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary="" config="" root="" board="" start=1

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --config) config="${2:?--config needs a path}"; shift 2 ;;
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --board) board="${2:?--board needs a profile name}"; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 >&2 ;;
  esac
done

[ -n "$binary" ] || { echo "install.sh: --binary PATH is required (the ferrite binary built for this board)" >&2; exit 2; }
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable file" >&2; exit 2; }
# Refuse a binary for another architecture before it becomes a service that fails at every boot.
if [ -z "$root" ] && ! "$binary" --version >/dev/null 2>&1; then
  echo "install.sh: $binary does not run on this machine ($(uname -m)); build it for this board (cross/build.sh)" >&2
  exit 2
fi
[ -n "$config" ] || config="$here/ferrite.toml"
[ -f "$config" ] || { echo "install.sh: config $config not found" >&2; exit 2; }
if [ -n "$board" ] && [ ! -f "$here/../boards/$board.toml" ]; then
  echo "install.sh: unknown board $board (boards/: $(cd "$here/../boards" && ls | sed 's/\.toml$//' | tr '\n' ' '))" >&2
  exit 2
fi
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo), or use --root DIR to stage into a directory" >&2
  exit 2
fi

install -D -m 0755 "$binary" "$root/usr/local/bin/ferrite"
install -D -m 0644 "$here/ferrite.service" "$root/etc/systemd/system/ferrite.service"
install -D -m 0644 "$here/99-ferrite.rules" "$root/etc/udev/rules.d/99-ferrite.rules"
if [ -e "$root/etc/ferrite/ferrite.toml" ]; then
  echo "install.sh: keeping existing $root/etc/ferrite/ferrite.toml"
else
  install -D -m 0644 "$config" "$root/etc/ferrite/ferrite.toml"
fi
if [ -n "$board" ]; then
  install -d "$root/etc/default"
  echo "FERRITE_BOARD=$board" > "$root/etc/default/ferrite"
fi
[ -f "$here/../README.md" ] && install -D -m 0644 "$here/../README.md" "$root/usr/local/share/doc/ferrite/README.md"
# The README links into docs/; without it the installed copy is a page of dead links.
if [ -d "$here/../docs" ]; then
  for doc in "$here"/../docs/*; do
    install -D -m 0644 "$doc" "$root/usr/local/share/doc/ferrite/docs/$(basename "$doc")"
  done
fi

if [ -n "$root" ]; then
  echo "install.sh: staged into $root (no user created, systemd not touched)"
  exit 0
fi

for g in video gpio i2c spi; do getent group "$g" >/dev/null || groupadd --system "$g"; done
if ! id ferrite >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/ferrite --shell /usr/sbin/nologin \
    --groups video,gpio,i2c,spi ferrite
fi
udevadm control --reload-rules 2>/dev/null && udevadm trigger 2>/dev/null || true
FERRITE_BOARD="$board" "$root/usr/local/bin/ferrite" check --config /etc/ferrite/ferrite.toml ||
  echo "install.sh: warning: 'ferrite check' reported problems (above); the service retries missing devices"
systemctl daemon-reload
systemctl enable ferrite.service
if [ "$start" = 1 ]; then
  systemctl restart ferrite.service
  echo "install.sh: started; follow it with: journalctl -u ferrite -f"
else
  echo "install.sh: enabled; it starts at next boot (or: systemctl start ferrite)"
fi
