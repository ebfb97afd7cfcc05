#!/bin/sh
# pause.sh [BUILDDIR] - the longest event-loop stall while odrelayd with
# BENCH_DOMAINS (50000) configured domains and BENCH_HELD (100000) held
# 1 KiB messages over them (bench/mkqueue) serves /metrics scrapes and
# reloads its configuration (issue 16).
#
# A client sends NOOP every 10 ms (bench/scaleprobe.py noop) during each
# phase; the phase's row is its longest and 99th-percentile reply delay:
#   idle     BENCH_SECONDS (5) of nothing
#   scrape   BENCH_RUNS (10) /metrics GETs one after the other (their
#            median time and body size are printed too)
#   sighup   BENCH_RUNS SIGHUPs, each waited for in the log
# Then `odrelayctl stats` and `odrelayctl queue d1.test` times (median of
# BENCH_RUNS). Needs python3; processes are killed by PID.
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
bench_init
ndom=${BENCH_DOMAINS:-50000}
held=${BENCH_HELD:-100000}
runs=${BENCH_RUNS:-10}
idle=${BENCH_SECONDS:-5}
probe=$bench_dir/scaleprobe.py
ctl=$builddir/odrelayctl
mkqueue=$builddir/bench/mkqueue
[ -x "$mkqueue" ] || { echo "$mkqueue not built (make bench/mkqueue)"; exit 1; }
machine_line
echo "# $ndom domains, $held held messages, $runs runs"

dir=$tmp/run
port=$(free_port)
mport=$(free_port)
odrelayd_conf "$dir" "$port" "queue_map_size = 4G" "metrics_listen = 127.0.0.1:$mport"
awk -v n="$ndom" 'BEGIN { for (i = 0; i < n; i++) printf "[domain d%d.test]\nhold = yes\n", i }' >>"$dir/odrelay.conf"
"$mkqueue" "$dir/queue" 4294967296 "$held" "$ndom" 1024 0 >/dev/null || { echo "mkqueue failed"; exit 1; }
odrelayd_start "$dir" "$port"

# phase NAME CMD...: the stall seen while CMD runs
phase() {
	name=$1; shift
	python3 "$probe" noop "$port" "$tmp/noop.out" &
	noopid=$!
	sleep 0.5
	"$@"
	sleep 0.2
	kill "$noopid"; wait "$noopid" 2>/dev/null
	printf "%-8s stall max %s ms, p99 %s ms (%s replies)\n" "$name" \
	    $(awk 'NR == 1 { print $1, $2, $3 }' "$tmp/noop.out")
}

scrapes() {
	python3 - "$mport" "$runs" <<'PY'
import statistics, sys, time, urllib.request
port, runs = int(sys.argv[1]), int(sys.argv[2])
t, size = [], 0
for _ in range(runs):
    t0 = time.monotonic()
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=60).read()
    t.append(time.monotonic() - t0)
    size = len(body)
print("# scrape: median %.1f ms, body %d bytes" % (statistics.median(t) * 1000, size))
PY
}

sighups() {
	i=0
	while [ $i -lt "$runs" ]; do
		before=$(grep -c 'reload: configuration' "$dir/odrelayd.log")
		kill -HUP "$odpid"
		until [ "$(grep -c 'reload: configuration' "$dir/odrelayd.log")" -gt "$before" ]; do
			sleep 0.02
		done
		i=$((i + 1))
	done
}

phase idle sleep "$idle"
phase scrape scrapes
phase sighup sighups

ctltime() {
	for i in $(seq "$runs"); do
		t0=$(now)
		"$ctl" -c "$dir/odrelay.conf" "$@" >/dev/null 2>&1
		echo "$(now) - $t0" | bc -l
	done | median | awk '{ printf "%.3f", $1 }'
}
echo "odrelayctl stats: $(ctltime stats) s; queue d1.test: $(ctltime queue d1.test) s (medians)"
odrelayd_stop
