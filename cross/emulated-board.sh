#!/usr/bin/env bash
# Runs the aarch64 ferrite binary on an emulated board and checks what it did to real kernel
# devices: qemu-system-aarch64 -M virt -cpu cortex-a72 (TCG; no KVM needed) boots Debian's arm64
# kernel with a busybox initramfs, and inside the guest
#   camera   vivid's capture node, fed a face through vivid's video loopback (cross/vivid_feed.rs)
#   GPIO     the virt machine's PL061 controller (/dev/gpiochip0, 8 lines)
#   display  virtio-gpu's DRM framebuffer emulation (/dev/fb0)
# ferrite runs for a fixed number of frames; the host then checks its JSON events and stats, the
# GPIO levels (sampled from debugfs in the guest and traced by qemu's PL061 model on the host) and
# the framebuffer's pixels against the PNG display driver's rendering of the same state.
#
#   cross/emulated-board.sh                  build with cross/build.sh (incremental), then test
#   cross/emulated-board.sh --binary PATH    test an existing aarch64 ferrite binary
#       --feeder PATH      an existing aarch64 vivid_feed (default: built here, needs the toolchain)
#       --no-apt           do not install packages (they must be there already)
#       --frames N         frames ferrite processes (default 12)
#       --vm-timeout S     limit for the VM (default 900 s); the whole script is bounded by
#       --timeout S        (default 2400 s, including any build)
#
# Downloads and build products are cached in target/emulated-board/ (git-ignored); the results of
# the last run are in target/emulated-board/results/. Exit status 0 when every check passed,
# 1 with a one-line reason ("emulated-board: FAIL: ...") otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
here=$repo/cross/emulated-board
work=$repo/target/emulated-board
target=aarch64-unknown-linux-gnu

binary="" feeder="" apt=1 frames=12 vm_timeout=900 total_timeout=2400
size=640x480
args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$(realpath "$2"); shift 2 ;;
    --feeder) feeder=$(realpath "$2"); shift 2 ;;
    --no-apt) apt=0; shift ;;
    --frames) frames=$2; shift 2 ;;
    --vm-timeout) vm_timeout=$2; shift 2 ;;
    --timeout) total_timeout=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "emulated-board: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# The whole run is bounded: re-exec once under timeout(1), which signals the whole process group
# (builds and qemu included); the variable stops the recursion.
if [ -z "${EMULATED_BOARD_BOUNDED:-}" ]; then
  export EMULATED_BOARD_BOUNDED=1
  rc=0
  timeout -k 10 "$total_timeout" "$0" "${args[@]}" || rc=$?
  if [ "$rc" -eq 124 ]; then echo "emulated-board: FAIL: the whole run took longer than $total_timeout s" >&2; fi
  exit "$rc"
fi

step() { printf '[%5ds] %s\n' "$SECONDS" "$*"; }
fail() { echo "emulated-board: FAIL: $*" >&2; exit 1; }
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
mkdir -p "$work"

# --- 1. Packages: qemu, initramfs tools, kmod (depmod/modprobe resolve the module closure) ------
if [ "$apt" -eq 1 ]; then
  step "installing packages (apt)"
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends \
    qemu-system-arm cpio kmod python3 >/dev/null
fi
for tool in qemu-system-aarch64 cpio depmod modprobe python3 apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || fail "$tool is missing (run without --no-apt)"
done

# --- 2. Debian's arm64 kernel, busybox and glibc, downloaded (never installed), cached extracted --
# The kernel is whatever linux-image-arm64 points to today, so the test follows Debian's updates.
kver=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null |
  sed -n 's/.*Depends: linux-image-\([0-9][^:]*-arm64\)\(:arm64\)\?$/\1/p' | head -n 1)
[ -n "$kver" ] || fail "apt offers no linux-image-arm64:arm64 (dpkg --add-architecture arm64; apt-get update)"
dl=$work/downloads
kdir=$work/kernel-$kver
if [ ! -e "$kdir/.done" ]; then
  step "downloading linux-image-$kver and busybox-static (arm64)"
  rm -rf "$dl" "$kdir"; mkdir -p "$dl" "$kdir"
  # libc6 and libgcc-s1: the binaries are linked against glibc, like on Raspberry Pi OS.
  (cd "$dl" && apt-get download -q "linux-image-$kver:arm64" busybox-static:arm64 libc6:arm64 \
    libgcc-s1:arm64 >/dev/null 2>&1) || fail "apt-get download linux-image-$kver:arm64 busybox-static:arm64 libc6:arm64 libgcc-s1:arm64 failed"
  dpkg-deb -x "$dl"/linux-image-*.deb "$kdir"
  dpkg-deb -x "$dl"/busybox-static_*.deb "$kdir/busybox"
  for deb in "$dl"/libc6_*.deb "$dl"/libgcc-s1_*.deb; do dpkg-deb -x "$deb" "$kdir/libs"; done
  # The package ships no modules.dep (its postinst makes it); build it for modprobe below.
  depmod -b "$kdir" "$kver"
  rm -rf "$dl"   # the extracted tree is the cache
  touch "$kdir/.done"
fi
vmlinuz=$kdir/boot/vmlinuz-$kver
busybox=$kdir/busybox/bin/busybox
step "kernel $kver"

# --- 3. The aarch64 binaries: ferrite (cross/build.sh) and the vivid feeder --------------------
cross_env() {
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target
}
if [ -z "$binary" ]; then
  step "building ferrite and the vivid feeder for $target (cross/build.sh --with-feeder)"
  if [ "$apt" -eq 1 ]; then cross/build.sh --with-feeder; else cross/build.sh --no-apt --with-feeder; fi
  binary=$repo/target/$target/release/ferrite
  [ -n "$feeder" ] || feeder=$repo/target/$target/release/vivid_feed
fi
[ -x "$binary" ] || fail "no ferrite binary at $binary"
# ELF e_machine (2 bytes at offset 18) is 0xb7 for aarch64.
[ "$(od -An -tx1 -j18 -N2 "$binary" | tr -d ' ')" = "b700" ] || fail "$binary is not an aarch64 executable"
if [ -z "$feeder" ]; then
  step "building cross/vivid_feed.rs for $target"
  [ -x /usr/bin/cargo ] || fail "/usr/bin/cargo (Debian cargo-web) is missing: run cross/build.sh once, or pass --feeder"
  (cross_env && /usr/bin/cargo build -q --release --features vivid-feed --bin vivid_feed --target "$target") ||
    fail "building vivid_feed failed"
  feeder=$repo/target/$target/release/vivid_feed
fi
[ -x "$feeder" ] || fail "no vivid_feed binary at $feeder"

# --- 4. The initramfs: busybox, the module closure, ferrite, the feeder, the face --------------
step "building the initramfs"
root=$work/initramfs
rm -rf "$root"
mkdir -p "$root"/{bin,etc,lib/modules,share,dev,proc,sys,tmp,out}
cp "$busybox" "$root/bin/busybox"
cp "$here/init.sh" "$root/init"
chmod 755 "$root/init"
cp "$binary" "$root/bin/ferrite"
cp "$feeder" "$root/bin/vivid_feed"
cp "$repo/assets/astronaut.png" "$root/share/"
# The shared libraries the binaries need (their DT_NEEDED, transitively), from Debian's arm64 glibc.
mkdir -p "$root/lib/aarch64-linux-gnu"
ln -s aarch64-linux-gnu/ld-linux-aarch64.so.1 "$root/lib/ld-linux-aarch64.so.1"
pending=("$root/bin/ferrite" "$root/bin/vivid_feed")
while [ ${#pending[@]} -gt 0 ]; do
  elf=${pending[0]}; pending=("${pending[@]:1}")
  for lib in $(python3 "$here/elf_needed.py" "$elf"); do
    [ -e "$root/lib/aarch64-linux-gnu/$lib" ] && continue
    found=$(find "$kdir/libs" -name "$lib" | head -n 1)
    [ -n "$found" ] || fail "$lib (needed by $(basename "$elf")) is not in libc6:arm64 or libgcc-s1:arm64"
    cp -L "$found" "$root/lib/aarch64-linux-gnu/$lib"
    pending+=("$root/lib/aarch64-linux-gnu/$lib")
  done
done
cp "$here/ferrite.toml" "$root/etc/ferrite.toml"
sed -i "s/^size = .*/size = \"$size\"/" "$root/etc/ferrite.toml"
# vivid: one instance with only a video capture (bit 0) and a video output node (bit 8), so the
# nodes are /dev/video0 and /dev/video1 and vivid's own test framebuffer (bit 16) does not take
# /dev/fb0; one HDMI input and one HDMI output, the pair its loopback works between.
declare -A params=(
  [vivid]="n_devs=1 node_types=0x101 vid_cap_nr=0 vid_out_nr=1 num_inputs=1 input_types=0x3 num_outputs=1 output_types=0x1"
)
: > "$root/etc/modules.load"
for module in virtio_pci virtio_blk virtio_gpu vivid; do
  # modprobe prints the insmod lines of the module and its dependencies, dependencies first.
  while read -r cmd path _; do
    [ "$cmd" != missing ] || fail "modprobe cannot resolve module $path in $kver"
    [ "$cmd" = insmod ] || continue   # "builtin ..." needs nothing
    name=$(basename "$path")
    grep -q "^$name\\b" "$root/etc/modules.load" && continue
    case "$path" in
      *.ko) cp "$path" "$root/lib/modules/$name" ;;
      *.ko.xz) xz -dc "$path" > "$root/lib/modules/${name%.xz}"; name=${name%.xz} ;;
      *.ko.zst) zstd -qdc "$path" > "$root/lib/modules/${name%.zst}"; name=${name%.zst} ;;
      *) fail "unexpected module file $path" ;;
    esac
    base=${name%.ko}
    echo "$name ${params[${base//-/_}]:-}" >> "$root/etc/modules.load"
  done < <(modprobe -d "$kdir" -S "$kver" --show-depends "$module" || echo "missing $module")
done
cat > "$root/etc/board.env" <<EOF
FRAMES=$frames
SIZE=$size
FB_SNAPSHOT_AFTER=3
EOF
initrd=$work/initramfs.cpio
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$initrd"
step "initramfs: $(du -m "$initrd" | cut -f1) MB, modules: $(cut -d' ' -f1 "$root/etc/modules.load" | tr '\n' ' ')"

# --- 5. Boot the board ------------------------------------------------------------------------
results=$work/results
rm -rf "$results"; mkdir -p "$results"
disk=$work/results.img
rm -f "$disk" "$work/monitor.sock" "$work/console.in"; truncate -s 64M "$disk"
# The serial console's input: the host answers the guest's screendump requests through it.
# Opened read-write here so that neither side blocks on opening the FIFO.
mkfifo "$work/console.in"
exec 3<>"$work/console.in"
w=${size%x*} h=${size#*x}
step "booting qemu-system-aarch64 -M virt -cpu cortex-a72 (TCG), at most $vm_timeout s"
vm_start=$SECONDS
vm_rc=0
: > "$results/console.log"   # exists before tail(1) below follows it
# -display none keeps virtio-gpu's scanout headless; the guest's framebuffer is still real.
# -nic none: the board needs no network, and qemu's default card would need its option ROM
# (efi-virtio.rom, in ipxe-qemu, a package only recommended by qemu-system-arm, which is installed
# here without recommends).
# The PL061 trace records every level change of the GPIO outputs as the emulated hardware sees it.
timeout -k 10 "$vm_timeout" qemu-system-aarch64 \
  -M virt -cpu cortex-a72 -smp 2 -m 1536 -accel tcg,thread=multi -nic none \
  -kernel "$vmlinuz" -initrd "$initrd" \
  -append "console=ttyAMA0 panic=-1 loglevel=4" \
  -display none -device "virtio-gpu-pci,xres=$w,yres=$h" \
  -drive "file=$disk,format=raw,if=none,id=results" -device virtio-blk-pci,drive=results \
  -d trace:pl061_set_output -D "$results/qemu-trace.log" \
  -monitor "unix:$work/monitor.sock,server=on,wait=off" \
  -serial stdio -no-reboot < "$work/console.in" > "$results/console.log" 2>&1 &
vm=$!
trap 'kill "$vm" 2>/dev/null || true' EXIT
# Progress: the guest's "board: ..." lines as they come. "board: screendump NAME" asks for a
# picture of the emulated display itself, taken from outside through qemu's monitor.
tail -n +1 -f "$results/console.log" --pid=$vm 2>/dev/null | grep --line-buffered '^board: ' |
  while IFS= read -r line; do
    line=${line%$'\r'}   # the serial console ends lines with CR LF
    step "${line#board: }"
    case "$line" in
      "board: screendump "*)
        name=${line#board: screendump }
        python3 "$here/monitor.py" "$work/monitor.sock" screendump "$results/screendump-$name.ppm" ||
          step "screendump $name failed"
        echo >&3 ;;   # the guest waits for this line
    esac
  done &
progress=$!
wait "$vm" || vm_rc=$?
sleep 1; kill "$progress" 2>/dev/null || true; wait "$progress" 2>/dev/null || true
exec 3>&-
vm_time=$((SECONDS - vm_start))
[ "$vm_rc" -eq 124 ] && fail "the VM did not power off within $vm_timeout s (console: $results/console.log)"
[ "$vm_rc" -eq 0 ] || fail "qemu exited with status $vm_rc (console: $results/console.log)"
step "VM powered off after $vm_time s"

# --- 6. Results out of the raw disk, then the checks ------------------------------------------
tar xf "$disk" -C "$results" 2>/dev/null || fail "the guest wrote no results (console: $results/console.log)"
[ ! -e "$results/failure" ] || fail "in the guest: $(cat "$results/failure")"
python3 "$here/check.py" "$results" --frames "$frames" --config "$here/ferrite.toml" ||
  exit 1
step "all checks passed (VM $vm_time s, total $SECONDS s)"
