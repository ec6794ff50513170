#!/usr/bin/env bash
# Soak test (not in CI): `ferrite run` for a long time on a looping input in which a face comes and
# goes, publishing to a real local mosquitto that is killed and restarted on a schedule, while the
# process's memory, open files and threads are sampled. Passes when, after the warm-up, resident
# memory stays within 5 % of its post-warm-up value, neither open files nor threads grow, the run
# exits as expected, and every event in the JSON log reached the MQTT subscriber or was counted as
# lost by ferrite (`sink errors` in --stats).
#
#   scripts/soak.sh                          one hour, broker down 10 s of every 60 s
#   scripts/soak.sh --minutes 5              shorter
#   scripts/soak.sh --outage 20 --every 90   longer outages, less often
#   scripts/soak.sh --binary PATH            another ferrite (default: target/release/ferrite, built)
#
# Needs mosquitto and mosquitto_sub (scripts/setup.sh --dev installs them). Everything it writes
# (the input frames, logs, samples.tsv) stays in a temporary folder printed at the start.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=60 outage=10 every=60 sample=5 binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --outage) outage=$2; shift 2 ;;
    --every) every=$2; shift 2 ;;
    --sample) sample=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "soak: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
step() { printf '[%5ds] %s\n' "$SECONDS" "$*"; }
fail() { echo "soak: FAIL: $*" >&2; exit 1; }
for tool in mosquitto mosquitto_sub; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || fail "$tool is missing (scripts/setup.sh --dev)"
done
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
if [ -z "$binary" ]; then
  step "building target/release/ferrite"
  cargo build -q --release
  binary=target/release/ferrite
fi

work=$(mktemp -d /tmp/ferrite-soak.XXXXXX)
step "working in $work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The input: the sample face for 6 frames, then 6 empty gray frames (PGM written here), looped at
# 10 fps, so a track appears and leaves about every 1.2 s: a steady stream of events.
mkdir "$work/frames"
for i in 1 2 3 4 5 6; do cp assets/astronaut.png "$work/frames/a$i.png"; done
for i in 1 2 3 4 5 6; do
  { printf 'P5\n320 240\n255\n'; head -c $((320 * 240)) /dev/zero | tr '\0' '\200'; } > "$work/frames/b$i.pgm"
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
  echo 18883)
cat > "$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $work/
EOF
broker=""
start_broker() { "$mosquitto" -c "$work/mosquitto.conf" >> "$work/mosquitto.log" 2>&1 & broker=$!; pids+=("$broker"); }
start_broker
sleep 1
# A persistent session (-c, QoS 1) so that the broker keeps the subscriber's messages across its own
# restarts; mosquitto_sub reconnects by itself.
mosquitto_sub -h 127.0.0.1 -p "$port" -i ferrite-soak-sub -c -q 1 -t 'ferrite/+/events' \
  > "$work/received.jsonl" 2> "$work/sub.log" &
pids+=("$!")
sleep 1

step "ferrite run for $minutes min; broker down $outage s of every $every s; sampling every $sample s"
RUST_LOG=info "$binary" run --input "$work/frames" --loop --fps 10 --detect-every 1 --min-hits 1 \
  --max-misses 1 --mqtt-host 127.0.0.1 --mqtt-port "$port" --json "$work/events.jsonl" --stats \
  > "$work/ferrite.out" 2> "$work/ferrite.log" &
ferrite=$!
pids+=("$ferrite")

printf 'seconds\trss_kb\tfds\tthreads\tbroker\n' > "$work/samples.tsv"
end=$((SECONDS + minutes * 60))
next_outage=$((SECONDS + every))
broker_up=1
while [ "$SECONDS" -lt "$end" ]; do
  kill -0 "$ferrite" 2>/dev/null || fail "ferrite exited early (log: $work/ferrite.log)"
  if [ "$broker_up" = 1 ] && [ "$SECONDS" -ge "$next_outage" ]; then
    kill "$broker"; wait "$broker" 2>/dev/null || true; broker_up=0
    back=$((SECONDS + outage))
  elif [ "$broker_up" = 0 ] && [ "$SECONDS" -ge "$back" ]; then
    start_broker; broker_up=1; next_outage=$((SECONDS + every))
  fi
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$ferrite/status")
  threads=$(awk '/^Threads/ {print $2}' "/proc/$ferrite/status")
  fds=$(ls "/proc/$ferrite/fd" | wc -l)
  printf '%d\t%s\t%s\t%s\t%s\n' "$SECONDS" "$rss" "$fds" "$threads" "$broker_up" >> "$work/samples.tsv"
  sleep "$sample"
done
[ "$broker_up" = 1 ] || { start_broker; sleep 6; }
step "stopping ferrite (SIGTERM)"
kill -TERM "$ferrite"
rc=0; wait "$ferrite" || rc=$?
sleep 2

# After the warm-up (the first tenth of the samples, at least two) nothing may grow.
awk -F'\t' 'NR > 1 { n++; rss[n] = $2; fds[n] = $3; thr[n] = $4 }
  END {
    warm = int(n / 10); if (warm < 2) warm = 2
    if (n <= warm) { print "soak: FAIL: too few samples (" n ")"; exit 1 }
    base = rss[warm]; maxr = base; maxf = fds[warm]; maxt = thr[warm]
    for (i = warm; i <= n; i++) { if (rss[i] > maxr) maxr = rss[i]; if (fds[i] > maxf) maxf = fds[i]; if (thr[i] > maxt) maxt = thr[i] }
    growth = 100 * (maxr - base) / base
    printf "memory: %d KB after warm-up, at most %d KB later (%+.1f %%); open files %d -> at most %d; threads %d -> at most %d\n", base, maxr, growth, fds[warm], maxf, thr[warm], maxt
    # One socket more while a reconnect overlaps the old one is not growth.
    if (growth > 5 || maxf > fds[warm] + 1 || maxt > thr[warm]) exit 1
  }' "$work/samples.tsv" || fail "resources grew (samples: $work/samples.tsv)"

# Event lines carry a "type" (appeared, expression_changed, left); QoS 1 may deliver one twice.
logged=$(grep -c '"type"' "$work/events.jsonl" || true)
received=$(sort -u "$work/received.jsonl" | grep -c '"type"' || true)
lost=$(awk '{ for (i = 1; i < NF - 1; i++) if ($i == "sink" && $(i + 1) == "errors") print $(i + 2) }' \
  "$work/ferrite.log" | tail -1)
lost=${lost:-0}
outages=$(grep -c 'retrying in the background' "$work/ferrite.log" || true)
reconnects=$(( $(grep -c 'mqtt: connected to' "$work/ferrite.log" || true) - 1 ))
slowest=$(grep -o 'connected to .* after [0-9.]* s' "$work/ferrite.log" | awk '{print $(NF - 1)}' | sort -n | tail -1)
echo "events: $logged in the JSON log, $received distinct ones received over MQTT, $lost counted as lost"
echo "broker: $outages outages seen, $reconnects reconnects (longest time without a connection ${slowest:-0} s); exit status $rc"
[ "$reconnects" -ge "$outages" ] || fail "$((outages - reconnects)) outages never recovered"
[ "$logged" -gt 0 ] || fail "no events were logged"
[ $((received + lost)) -ge "$logged" ] || fail "$((logged - received - lost)) events neither delivered nor counted"
[ "$rc" -eq 0 ] || [ "$lost" -gt 0 ] || fail "ferrite exited $rc without counting a loss"
step "soak passed ($work)"
