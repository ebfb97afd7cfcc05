#!/bin/sh
# bench/idle.sh - 1,000 idle SMTP connections held by odrelayd (each got
# its greeting and answered EHLO, then sits): the daemon's RSS. Target:
# VmRSS < 50 MB with all of them open. BENCH_RUNS fresh daemons; median.
#
# usage: sh bench/idle.sh [BUILDDIR]
# env:   BENCH_RUNS=3  BENCH_CONNS=1000  BENCH_DIR=/var/tmp
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
runs=${BENCH_RUNS:-3}
conns=${BENCH_CONNS:-1000}
ulimit -n $((conns * 2 + 200)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

bench_init
machine_line
echo "# ulimit -n $(ulimit -n); max_connections = max_connections_per_ip = $((conns + 100))"
echo "# python3 bench/smtpclient.py idle PORT $conns 60 FLAGFILE  (connect, 220, EHLO, hold)"
printf '%-4s %10s %10s %10s %10s  %s\n' run "RSS0 kB" "RSS kB" "HWM kB" "fds" "client"
: >"$tmp/rss"
r=1
while [ $r -le "$runs" ]; do
	port=$(free_port)
	rm -rf "$tmp/od"; mkdir -p "$tmp/od"
	odrelayd_conf "$tmp/od" "$port" \
	    "max_connections = $((conns + 100))" "max_connections_per_ip = $((conns + 100))" \
	    "" "[domain example.org]" "hold = yes"
	odrelayd_start "$tmp/od" "$port"
	sleep 0.2
	r0=$(status_kb "$odpid" VmRSS)
	: >"$tmp/flag"
	python3 "$bench_dir/smtpclient.py" idle "$port" "$conns" 60 "$tmp/flag" >"$tmp/client.out" 2>&1 &
	cpid=$!
	bench_pids="$bench_pids $cpid"
	i=0
	until grep -q ready "$tmp/client.out" || ! kill -0 "$cpid" 2>/dev/null; do
		i=$((i + 1)); [ $i -gt 600 ] && break
		sleep 0.1
	done
	sleep 1
	r1=$(status_kb "$odpid" VmRSS)
	h1=$(status_kb "$odpid" VmHWM)
	nfd=$(ls "/proc/$odpid/fd" | wc -l)
	rm -f "$tmp/flag"
	wait "$cpid"
	bench_pids=$(echo "$bench_pids" | tr ' ' '\n' | grep -vx "$cpid" | tr '\n' ' ')
	odrelayd_stop
	echo "$r1" >>"$tmp/rss"
	printf '%-4d %10d %10d %10d %10d  %s\n' "$r" "$r0" "$r1" "$h1" "$nfd" "$(tail -1 "$tmp/client.out")"
	r=$((r + 1))
done
med=$(median <"$tmp/rss")
awk -v m="$med" -v n="$conns" 'BEGIN { printf "median VmRSS with %d idle connections: %d kB = %.1f MB (target < 50 MB: %s)\n", n, m, m / 1024, m < 51200 ? "met" : "NOT met" }'
