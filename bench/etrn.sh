#!/bin/sh
# bench/etrn.sh - ETRN flush: N held 10 KiB messages for example.org, then
# "ETRN example.org"; the figure is the time from sending ETRN to the sink
# (Postfix's smtp-sink -c, counting messages) having received the last one.
#   odrelayd  [domain example.org] hold = yes, route = [127.0.0.1]:SINKPORT
#             (default max_deliveries_per_dest, i.e. a demo-like config)
#   postfix   backup MX of postfix-setup.sh: defer_transports = etrn-only,
#             transport example.org etrn-only:[127.0.0.1]:SINKPORT, fast
#             flush (flush(8)) on ETRN; default concurrency settings
# Each run loads a fresh queue (smtp-source, 10 sessions; load time shown
# too), waits until Postfix has deferred everything, then flushes. The
# servers alternate; medians of BENCH_RUNS. Prints figures only.
#
# usage: sh bench/etrn.sh [BUILDDIR]
# env:   BENCH_N=10000  BENCH_RUNS=3  BENCH_SIZE=10240  BENCH_TIMEOUT=900
#        BENCH_SERVERS="odrelayd postfix"  BENCH_DIR=/var/tmp
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
n=${BENCH_N:-10000}
runs=${BENCH_RUNS:-3}
size=${BENCH_SIZE:-10240}
timeout=${BENCH_TIMEOUT:-900}
servers=${BENCH_SERVERS:-odrelayd postfix}

bench_init
machine_line
sinkport=$(free_port)
sinkcmd="$sink -c -u nobody 127.0.0.1:$sinkport 1000"
echo "# load: smtp-source -s 10 -m $n -l $size -f bench@client.test -t bench@example.org 127.0.0.1:PORT"
echo "# flush: python3 bench/smtpclient.py etrn PORT example.org '$sinkcmd' $n $timeout"

pfport=$(free_port)
case " $servers " in *" postfix "*)
	[ "$(id -u)" = 0 ] || { echo "postfix needs root; BENCH_SERVERS=odrelayd"; exit 1; }
	export BENCH_PF_PORT=$pfport BENCH_PF_ROUTE="[127.0.0.1]:$sinkport"
	sh "$bench_dir/postfix-setup.sh" teardown
	sh "$bench_dir/postfix-setup.sh" start || exit 1
	pf_started=1
	pfdir=${BENCH_PF_DIR:-/var/tmp/odrelay-bench-postfix}
	echo "# postfix: $pfdir/etc, transport: $(cat "$pfdir/etc/transport")"
esac

load() {
	t0=$(now)
	"$source" -s 10 -m "$n" -l "$size" -f bench@client.test -t bench@example.org \
	    -M client.test 127.0.0.1:"$1" >"$tmp/source.out" 2>&1 ||
	    { echo "# smtp-source failed:"; head -3 "$tmp/source.out"; }
	t1=$(now)
	lt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
}

# postfix_queued: messages in Postfix's queue (any state)
postfix_queued() {
	find "$pfdir/spool/incoming" "$pfdir/spool/active" "$pfdir/spool/deferred" \
	    "$pfdir/spool/maildrop" -type f 2>/dev/null | wc -l
}

one_run() {
	srv=$1
	case $srv in
	odrelayd)
		port=$(free_port)
		rm -rf "$tmp/od"; mkdir -p "$tmp/od"
		odrelayd_conf "$tmp/od" "$port" "" "[domain example.org]" "hold = yes" \
		    "route = [127.0.0.1]:$sinkport"
		odrelayd_start "$tmp/od" "$port"
		load "$port"
		q=$(od_queued "$tmp/od")
		;;
	postfix)
		port=$pfport
		sh "$bench_dir/postfix-setup.sh" clear
		load "$port"
		# wait until every message is deferred and in the flush log
		i=0
		while [ -n "$(find "$pfdir/spool/incoming" "$pfdir/spool/active" -type f | head -1)" ]; do
			i=$((i + 1)); [ $i -gt 1200 ] && break
			sleep 0.5
		done
		sleep 1
		q=$(postfix_queued)
		;;
	esac
	res=$(python3 "$bench_dir/smtpclient.py" etrn "$port" example.org "$sinkcmd" "$n" "$timeout")
	# what is left in the queue 4 s after the last message
	sleep 1
	case $srv in
	odrelayd)
		left=$(od_queued "$tmp/od")
		odrelayd_stop
		grep -iE "error|fatal|crit" "$tmp/od/odrelayd.log" | head -3 ;;
	postfix)
		left=$(postfix_queued) ;;
	esac
	set -- $res
	echo "$srv $1" >>"$tmp/times"
	printf '%-9s %4d %8s %8s %10s %8s %10s %8s  %s\n' "$srv" "$r" "$lt" "$q" "$1" "$2" \
	    "$(echo "$4" | sed 's/first=//')" "$left" "$3 $5"
}

printf '%-9s %4s %8s %8s %10s %8s %10s %8s  %s\n' server run "load s" queued "flush s" sunk "first s" left "status reply"
: >"$tmp/times"
r=1
while [ $r -le "$runs" ]; do
	for srv in $servers; do
		one_run "$srv"
	done
	r=$((r + 1))
done
for srv in $servers; do
	med=$(awk -v s="$srv" '$1 == s { print $2 }' "$tmp/times" | median)
	awk -v s="$srv" -v m="$med" -v n="$n" 'BEGIN { printf "%-9s median flush of %d messages: %.2f s = %.0f msg/s\n", s, n, m, n / m }'
done
[ "$pf_started" = 1 ] && sh "$bench_dir/postfix-setup.sh" clear
