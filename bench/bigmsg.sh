#!/bin/sh
# bench/bigmsg.sh - one 100 MiB message accepted by odrelayd: growth of the
# daemon's peak RSS (VmHWM in /proc/PID/status, before the connection and
# after the 250). Target: < 16 MB. BENCH_RUNS fresh daemons; median printed.
#
# usage: sh bench/bigmsg.sh [BUILDDIR]
# env:   BENCH_RUNS=3  BENCH_MB=100  BENCH_DIR=/var/tmp
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
runs=${BENCH_RUNS:-3}
mb=${BENCH_MB:-100}

bench_init
machine_line
echo "# python3 bench/smtpclient.py big PORT $mb   (SIZE=, 80-octet lines, streamed)"
printf '%-4s %10s %10s %10s %10s %8s  %s\n' run "HWM0 kB" "HWM1 kB" "RSS1 kB" "growth kB" "secs" reply
: >"$tmp/growth"
r=1
while [ $r -le "$runs" ]; do
	port=$(free_port)
	rm -rf "$tmp/od"; mkdir -p "$tmp/od"
	odrelayd_conf "$tmp/od" "$port" "max_message_size = $((mb + 10))M" \
	    "" "[domain example.org]" "hold = yes"
	odrelayd_start "$tmp/od" "$port"
	sleep 0.2
	h0=$(status_kb "$odpid" VmHWM)
	t0=$(now)
	out=$(python3 "$bench_dir/smtpclient.py" big "$port" "$mb")
	t1=$(now)
	h1=$(status_kb "$odpid" VmHWM)
	r1=$(status_kb "$odpid" VmRSS)
	odrelayd_stop
	echo $((h1 - h0)) >>"$tmp/growth"
	awk -v r="$r" -v h0="$h0" -v h1="$h1" -v r1="$r1" -v a="$t0" -v b="$t1" -v o="${out##*reply: }" \
	    'BEGIN { printf "%-4d %10d %10d %10d %10d %8.2f  %s\n", r, h0, h1, r1, h1 - h0, b - a, o }'
	r=$((r + 1))
done
med=$(median <"$tmp/growth")
awk -v m="$med" 'BEGIN { printf "median VmHWM growth: %d kB = %.1f MB (target < 16 MB: %s)\n", m, m / 1024, m < 16384 ? "met" : "NOT met" }'
