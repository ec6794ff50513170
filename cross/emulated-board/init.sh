#!/bin/busybox sh
# PID 1 of the emulated board (busybox sh in the initramfs that cross/emulated-board.sh builds).
# It loads the kernel modules, feeds a face into vivid's video loopback, runs ferrite on the
# camera with the framebuffer and GPIO outputs, records what the kernel saw independently of
# ferrite (GPIO line levels from debugfs, the framebuffer's pixels), renders the reference
# pictures, writes everything as a tar archive onto the raw disk /dev/vda and powers off.
# Progress goes to the serial console as "board: ..." lines; "board: FAIL ..." ends the run early.
# shellcheck shell=sh

/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /out
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp

# FRAMES, SIZE, FB_SNAPSHOT_AFTER: written by the host script.
# shellcheck source=/dev/null
. /etc/board.env

say() { echo "board: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# Writes the results (whatever exists so far) to the disk and powers off; never returns.
finish() {
    uptime_s > /out/uptime-end
    dmesg > /out/dmesg.txt
    if tar cf /dev/vda -C /out .; then sync; say "results written ($(du -sk /out | cut -f1) KiB)"
    else say "FAIL cannot write the results disk"; fi
    say "$1"
    poweroff -f
    sleep 60
}
fail() { echo "$*" > /out/failure; say "FAIL $*"; finish "powering off after a failure"; }

uptime_s > /out/uptime-start
say "booted in $(uptime_s) s, kernel $(uname -r)"

# Modules in dependency order (resolved on the host from modules.dep), with their parameters.
while read -r module params; do
    # shellcheck disable=SC2086 # the parameters are separate words
    insmod "/lib/modules/$module" $params || fail "insmod $module $params"
done < /etc/modules.load

wait_for() {  # PATH SECONDS
    n=0
    while [ ! -e "$1" ]; do
        n=$((n + 1)); [ "$n" -gt $(($2 * 10)) ] && return 1; usleep 100000
    done
}
for node in /dev/video0 /dev/video1 /dev/fb0 /dev/gpiochip0 /dev/vda; do
    wait_for "$node" 20 || fail "$node did not appear"
done
say "devices up at $(uptime_s) s: $(echo /dev/video* /dev/fb* /dev/gpiochip* /dev/vda)"

# The framebuffer console draws text and a blinking cursor on fb0; unbind it so the only
# pixels there are ferrite's (Documentation/fb/fbcon.rst).
for vt in /sys/class/vtconsole/vtcon*; do
    grep -q "frame buffer" "$vt/name" && echo 0 > "$vt/bind"
done
fb=/sys/class/graphics/fb0
{
    echo "name=$(cat $fb/name)"
    echo "virtual_size=$(cat $fb/virtual_size)"
    echo "bits_per_pixel=$(cat $fb/bits_per_pixel)"
    echo "stride=$(cat $fb/stride)"
} > /out/fbinfo
cat /sys/kernel/debug/gpio > /out/gpio-before.txt
cat /sys/class/video4linux/video0/name /sys/class/video4linux/video1/name > /out/video-names.txt

# A face into the camera: vivid's output node loops back into its capture node. The crop keeps
# the face large in the frame (ferrite classify finds it at [178,81,94,94] in the 512x512 image):
# the short-range detector sees the whole 640x480 frame scaled down to 128 pixels.
/bin/vivid_feed --capture /dev/video0 --output /dev/video1 --image /share/astronaut.png \
    --crop 97,12,256,256 --size "${SIZE:?}" --gray-out /out/frame.pgm --ready /tmp/feeding > /out/feed.log 2>&1 &
feeder=$!
n=0
while [ ! -e /tmp/feeding ]; do
    kill -0 "$feeder" 2>/dev/null || fail "vivid_feed exited: $(tail -n 1 /out/feed.log)"
    n=$((n + 1)); [ "$n" -gt 600 ] && fail "vivid_feed not ready after 60 s"
    usleep 100000
done
say "vivid loopback feeding at $(uptime_s) s: $(grep verified /out/feed.log)"

# GPIO levels as the kernel reports them (debugfs reads the PL061 data register), sampled
# while ferrite runs; one block per change, stamped with the uptime.
(
    prev=""
    while [ ! -e /tmp/stop-sampling ]; do
        cur=""
        while IFS= read -r line; do cur="$cur$line
"; done < /sys/kernel/debug/gpio
        if [ "$cur" != "$prev" ]; then
            printf '@ %s\n%s' "$(uptime_s)" "$cur" >> /out/gpio-samples.txt
            prev=$cur
        fi
        usleep 20000
    done
) &
sampler=$!

# Asks the host for a qemu screendump (the emulated display, seen from outside) and waits until
# the host has taken it: the host answers with a line on the serial console.
screendump() {
    say "screendump $1"
    # shellcheck disable=SC3045 # busybox ash has read -t
    read -r -t 60 _ < /dev/console || say "no answer to screendump $1"
}

say "ferrite run: $FRAMES frames from /dev/video0 at $(uptime_s) s"
start=$(uptime_s)
# info logs name the negotiated camera format and the framebuffer's pixel layout.
RUST_LOG=warn,ferrite=info /bin/ferrite run --config /etc/ferrite.toml --max-frames "$FRAMES" --stats \
    > /out/ferrite.stdout 2> /out/ferrite.log &
ferrite=$!

# The framebuffer while a face is shown: once FB_SNAPSHOT_AFTER frames with a face have been
# reported, the face picture is on the screen. ferrite is stopped (SIGSTOP) meanwhile, so the
# framebuffer read and the screendump see the same, complete picture.
(
    while [ ! -e /tmp/stop-sampling ]; do
        faces=$(grep -c '"type":"state".*"faces":\[{' /out/events.jsonl 2>/dev/null)
        if [ "${faces:-0}" -ge "$FB_SNAPSHOT_AFTER" ]; then
            kill -STOP "$ferrite" || break
            usleep 200000   # the kernel's damage worker flushes the last write to the display
            cat /dev/fb0 > /out/fb-face.raw
            echo "$faces" > /out/fb-face.after
            screendump face
            kill -CONT "$ferrite"
            break
        fi
        usleep 100000
    done
) &
snapshot=$!

wait "$ferrite"
echo $? > /out/ferrite.rc
end=$(uptime_s)
echo "$start $end" > /out/run-times
say "ferrite run exited $(cat /out/ferrite.rc) after $(echo "$start $end" | awk '{printf "%.1f", $2 - $1}') s"
usleep 300000
touch /tmp/stop-sampling
wait "$sampler" "$snapshot"
kill "$feeder"; wait "$feeder"
usleep 200000
cat /dev/fb0 > /out/fb-end.raw
screendump end
cat /sys/kernel/debug/gpio > /out/gpio-after.txt

# Reference pictures from the PNG display driver, same size as the framebuffer: the face state
# from `ferrite classify` of the exact gray frame the camera delivered, and the "no face" state
# the run ends on.
size=$(tr , x < $fb/virtual_size)
/bin/ferrite classify /out/frame.pgm --display "png:/out/ref-face.png@$size" \
    > /out/classify.json 2> /out/classify.log || fail "ferrite classify failed: $(tail -n 1 /out/classify.log)"
{ printf 'P5\n64 64\n255\n'; head -c 4096 /dev/zero; } > /tmp/blank.pgm
/bin/ferrite classify /tmp/blank.pgm --display "png:/out/ref-noface.png@$size" \
    > /out/classify-blank.json 2> /out/classify-blank.log
say "references rendered at $(uptime_s) s"
finish "done"
