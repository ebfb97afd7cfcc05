#!/bin/sh
# ctlcmp.sh BEFORE_BUILDDIR AFTER_BUILDDIR - odrelayctl stats, stats
# --json ("json") and queue DOMAIN of two builds in turn on a queue kept
# by scale.sh (issue 16): CPU time (perf stat task-clock) and wall time, medians of BENCH_RUNS
# (7). odrelayd of AFTER runs meanwhile, its delay cursor idle (a
# delay_warning of an hour). The queue: BENCH_QUEUE
# (/var/tmp/odrelay-scale/2000000-50000: BENCH_REUSE=/var/tmp/odrelay-scale
# BENCH_SIZES=2000000 BENCH_DOMAINS=50000 sh bench/scale.sh builds it).
# BENCH_PAIR=1: each build's odrelayctl talks to its own odrelayd (the
# daemon's answers changed too), restarted at each switch of build and
# left BENCH_SETTLE (1) seconds first.
# Needs perf and python3; odrelayd is killed by PID.
set -u
[ $# -eq 2 ] || { echo "usage: sh bench/ctlcmp.sh BEFORE_BUILDDIR AFTER_BUILDDIR" >&2; exit 2; }
old=$(cd "$1" && pwd) || exit 2
new=$(cd "$2" && pwd) || exit 2
here=$(cd "$(dirname "$0")" && pwd)
q=${BENCH_QUEUE:-/var/tmp/odrelay-scale/2000000-50000}
runs=${BENCH_RUNS:-7}
[ -s "$q/odrelay.conf" ] || { echo "$q: no queue (see the header)"; exit 1; }
out=$(mktemp -d /tmp/odrelay-ctlcmp.XXXXXX) || exit 1
conf=$out/odrelay.conf
sed 's/^delay_warning = .*/delay_warning = 3600s/' "$q/odrelay.conf" >"$conf"
port=$(sed -n 's/^smtp_listen *= *127.0.0.1://p' "$conf")
pair=${BENCH_PAIR:-0}
od=
trap '[ -n "$od" ] && kill $od 2>/dev/null; wait $od 2>/dev/null; rm -rf "$out"' EXIT INT TERM
daemon() {
	if [ -n "$od" ]; then
		kill "$od"
		wait "$od" 2>/dev/null
	fi
	"$1/odrelayd" -f -c "$conf" 2>>"$out/odrelayd.log" &
	od=$!
	python3 "$here/scaleprobe.py" greet "$port" 60 >/dev/null
	sleep "${BENCH_SETTLE:-1}"
}
daemon "$new"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg), queue $q, pair $pair"
m() {
	perf stat -e task-clock "$@" 2>&1 >/dev/null |
	    awk '/task-clock/ { c = $1 } /elapsed/ { printf "%.1f %.1f\n", c, $1 * 1000 }'
}
for i in $(seq "$runs"); do
	for b in old new; do
		eval dir=\$$b
		[ "$pair" = 1 ] && daemon "$dir"
		echo "$b stats $(m "$dir/odrelayctl" -c "$q/odrelay.conf" stats)"
		echo "$b qdom $(m "$dir/odrelayctl" -c "$q/odrelay.conf" queue small.test)"
		echo "$b json $(m "$dir/odrelayctl" -c "$q/odrelay.conf" stats --json)"
	done
done >"$out/figs"
for k in "old stats" "new stats" "old json" "new json" "old qdom" "new qdom"; do
	for col in 3 4; do
		grep "^$k " "$out/figs" | awk -v c=$col '{ print $c }' | sort -g |
		    awk '{ v[NR] = $1 } END { printf "%s (%s-%s) ", v[int((NR + 1) / 2)], v[1], v[NR] }'
	done | awk -v k="$k" '{ printf "%s: CPU ms %s %s %s; wall ms %s %s %s\n", k, $1, $2, "", $3, $4, "" }'
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
