#!/bin/sh
# bench/verify.sh - inbound acceptance with recipient verification: Postfix's
# smtp-source at 50 parallel sessions, 10 KiB messages, against odrelayd
#   none    [domain example.org] hold = yes, no verification
#   probe   the same plus verify_recipients = probe, the primary being an
#           smtp-sink (route); the cache is warmed first with one RCPT for
#           the recipient smtp-source uses, so every RCPT of the run is a
#           cache hit (an LMDB read transaction at RCPT)
# Each configuration runs BENCH_RUNS times, interleaved, each on an empty
# queue; the median is printed, with the ratio probe/none.
#
# usage: sh bench/verify.sh [BUILDDIR]     (default: $top_builddir or .)
# env:   BENCH_SESSIONS=50  BENCH_MSGS=3000  BENCH_RUNS=5  BENCH_SIZE=10240
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
s=${BENCH_SESSIONS:-50}
m=${BENCH_MSGS:-3000}
runs=${BENCH_RUNS:-5}
size=${BENCH_SIZE:-10240}

bench_init
machine_line
echo "# smtp-source -s $s -m $m -l $size -f bench@client.test -t bench@example.org -M client.test 127.0.0.1:PORT"

# The primary: answers 250 to everything (only the warm-up RCPT reaches it).
sinkport=$(free_port)
"$sink" -u nobody 127.0.0.1:"$sinkport" 100 >/dev/null 2>&1 &
sinkpid=$!
bench_pids="$bench_pids $sinkpid"
wait_port "$sinkport" || { echo "smtp-sink did not start"; exit 1; }

# warm PORT: one RCPT for the benchmark's recipient, then wait until the
# answer is in the cache (what the run will read).
warm() {
	python3 - "$1" <<'EOF' || return 1
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 10)
f = s.makefile("rb")
def reply():
	while True:
		l = f.readline()
		if l[3:4] != b"-":
			return l
reply()
for c in (b"EHLO warm.test", b"MAIL FROM:<bench@client.test>",
    b"RCPT TO:<bench@example.org>", b"QUIT"):
	s.sendall(c + b"\r\n")
	r = reply()
	if c.startswith(b"RCPT") and not r.startswith(b"250"):
		sys.exit("warm-up RCPT: %r" % r)
EOF
	i=0
	until "$builddir/odrelayctl" -c "$tmp/od/odrelay.conf" recipients example.org 2>/dev/null |
	    grep -q "bench@example.org  valid  probe"; do
		i=$((i + 1)); [ $i -gt 100 ] && { echo "# cache not warm" >&2; return 1; }
		sleep 0.1
	done
}

# one_run CONFIG: appends "CONFIG seconds" to $tmp/times
one_run() {
	cfg=$1
	port=$(free_port)
	rm -rf "$tmp/od"; mkdir -p "$tmp/od"
	if [ "$cfg" = probe ]; then
		odrelayd_conf "$tmp/od" "$port" \
		    "max_connections = 1000" "max_connections_per_ip = 1000" \
		    "" "[domain example.org]" "hold = yes" \
		    "route = [127.0.0.1]:$sinkport" "verify_recipients = probe"
	else
		odrelayd_conf "$tmp/od" "$port" \
		    "max_connections = 1000" "max_connections_per_ip = 1000" \
		    "" "[domain example.org]" "hold = yes"
	fi
	odrelayd_start "$tmp/od" "$port"
	[ "$cfg" = probe ] && { warm "$port" || echo "# warm-up failed" >&2; }
	t0=$(now)
	"$source" -s "$s" -m "$m" -l "$size" -f bench@client.test \
	    -t bench@example.org -M client.test 127.0.0.1:"$port" \
	    >"$tmp/source.out" 2>&1 || { echo "# smtp-source failed ($cfg):" >&2; head -5 "$tmp/source.out" >&2; }
	t1=$(now)
	n=$(od_queued "$tmp/od")
	[ "${n:-0}" -lt "$m" ] && echo "# $cfg: queue shows $n of $m messages" >&2
	if [ "$cfg" = probe ]; then
		hits=$("$builddir/odrelayctl" -c "$tmp/od/odrelay.conf" stats --json 2>/dev/null |
		    python3 -c 'import json,sys; d=json.load(sys.stdin).get("daemon",{}); print(d.get("odrelay_recipient_cache_lookups_total{result=\"hit\"}",0), d.get("odrelay_recipient_probes_total{result=\"valid\"}",0))')
		echo "# probe run: cache hits, probes = $hits" >&2
	fi
	odrelayd_stop >&2
	grep -E "^smtp-source: (fatal|warning)" "$tmp/source.out" | head -3 >&2
	awk -v a="$t0" -v b="$t1" -v c="$cfg" 'BEGIN { printf "%s %.3f\n", c, b - a }' >>"$tmp/times"
}

: >"$tmp/times"
r=1
while [ $r -le "$runs" ]; do
	for cfg in none probe; do
		one_run "$cfg"
	done
	r=$((r + 1))
done
printf '%-6s %8s %8s %6s  %10s  %10s  %s\n' config sessions msgs runs "median s" "msg/s" "all runs (s)"
for cfg in none probe; do
	all=$(awk -v c="$cfg" '$1 == c { printf "%s ", $2 }' "$tmp/times")
	med=$(awk -v c="$cfg" '$1 == c { print $2 }' "$tmp/times" | median)
	echo "$cfg $med" >>"$tmp/med"
	awk -v c="$cfg" -v s="$s" -v m="$m" -v r="$runs" -v d="$med" -v all="$all" \
	    'BEGIN { printf "%-6s %8d %8d %6d  %10.3f  %10.1f  %s\n", c, s, m, r, d, m / d, all }'
done
awk '{ v[$1] = $2 } END { printf "# rate probe/none: %.3f\n", v["none"] / v["probe"] }' "$tmp/med"
