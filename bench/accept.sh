#!/bin/sh
# bench/accept.sh - inbound acceptance throughput: Postfix's smtp-source at
# 1, 10 and 50 parallel sessions, 10 KiB messages for example.org, against
#   smtp-sink  discards everything: the ceiling of the client and loopback
#   odrelayd   demo-like config, example.org held; 250 only after the LMDB
#              commit is synced (durable)
#   postfix    backup MX holding example.org until ETRN (postfix-setup.sh);
#              250 only after cleanup fsynced the queue file (durable)
# Each (server, sessions) cell is run BENCH_RUNS times, interleaved, each on
# an empty queue; the median is printed. Prints figures only.
#
# usage: sh bench/accept.sh [BUILDDIR]     (default: $top_builddir or .)
# env:   BENCH_SESSIONS="1 10 50"  BENCH_RUNS=3  BENCH_SIZE=10240
#        BENCH_MSGS="1:500 10:2000 50:5000"  (messages per run, by sessions)
#        BENCH_SERVERS="smtp-sink odrelayd postfix"
#        BENCH_REUSE=1 (smtp-source -d: one connection per session, not per message)
#        BENCH_DIR=/var/tmp (where the odrelayd queue goes; Postfix's is
#        BENCH_PF_DIR, default /var/tmp/odrelay-bench-postfix)
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
sessions=${BENCH_SESSIONS:-1 10 50}
runs=${BENCH_RUNS:-3}
size=${BENCH_SIZE:-10240}
msgs=${BENCH_MSGS:-1:500 10:2000 50:5000}
servers=${BENCH_SERVERS:-smtp-sink odrelayd postfix}
dflag=""
[ "${BENCH_REUSE:-0}" = 1 ] && dflag="-d"

bench_init
machine_line
echo "# smtp-source $dflag -s N -m M -l $size -f bench@client.test -t bench@example.org -M client.test 127.0.0.1:PORT ($( [ -n "$dflag" ] && echo 'one connection per session' || echo 'one connection per message'))"

pfport=$(free_port)
sinkport=$(free_port)
case " $servers " in *" postfix "*)
	[ "$(id -u)" = 0 ] || { echo "postfix needs root; BENCH_SERVERS='smtp-sink odrelayd'"; exit 1; }
	export BENCH_PF_PORT=$pfport BENCH_PF_ROUTE="[127.0.0.1]:$(free_port)"
	sh "$bench_dir/postfix-setup.sh" teardown
	sh "$bench_dir/postfix-setup.sh" start || exit 1
	pf_started=1
	pfdir=${BENCH_PF_DIR:-/var/tmp/odrelay-bench-postfix}
	echo "# postfix: $pfdir/etc (defer_transports = etrn-only), queue $(df -T "$pfdir" | awk 'NR==2 {print $2 " on " $1}')"
esac

msgs_for() {
	for kv in $msgs; do
		[ "${kv%%:*}" = "$1" ] && { echo "${kv#*:}"; return; }
	done
	echo $(($1 * 100 > 500 ? $1 * 100 : 500))
}

# postfix_settle: wait until cleanup/qmgr have moved everything to the
# deferred queue, then delete it all (the next run starts empty).
postfix_settle() {
	i=0
	while [ -n "$(find "$pfdir/spool/incoming" "$pfdir/spool/active" "$pfdir/spool/maildrop" -type f 2>/dev/null | head -1)" ]; do
		i=$((i + 1)); [ $i -gt 600 ] && { echo "# postfix queue did not settle"; break; }
		sleep 0.5
	done
	sh "$bench_dir/postfix-setup.sh" clear
}

# one_run SERVER SESSIONS MSGS: appends "SERVER seconds" to $tmp/times
one_run() {
	srv=$1; s=$2; m=$3
	case $srv in
	smtp-sink)
		port=$sinkport
		"$sink" -u nobody 127.0.0.1:"$port" 1000 >/dev/null 2>&1 &
		spid=$!; bench_pids="$bench_pids $spid"
		wait_port "$port" ;;
	odrelayd)
		port=$(free_port)
		rm -rf "$tmp/od"; mkdir -p "$tmp/od"
		odrelayd_conf "$tmp/od" "$port" \
		    "max_connections = 1000" "max_connections_per_ip = 1000" \
		    "" "[domain example.org]" "hold = yes"
		odrelayd_start "$tmp/od" "$port" ;;
	postfix)
		port=$pfport ;;
	esac
	t0=$(now)
	"$source" $dflag -s "$s" -m "$m" -l "$size" -f bench@client.test \
	    -t bench@example.org -M client.test 127.0.0.1:"$port" \
	    >"$tmp/source.out" 2>&1 || { echo "# smtp-source failed against $srv:" >&2; head -5 "$tmp/source.out" >&2; }
	t1=$(now)
	case $srv in
	smtp-sink)
		kill "$spid"; wait "$spid" 2>/dev/null
		bench_pids=$(echo "$bench_pids" | tr ' ' '\n' | grep -vx "$spid" | tr '\n' ' ') ;;
	odrelayd)
		n=$(od_queued "$tmp/od")
		[ "${n:-0}" -lt "$m" ] && echo "# odrelayd queue shows $n of $m messages" >&2
		odrelayd_stop >&2
		grep -iE "error|fatal|crit" "$tmp/od/odrelayd.log" | head -3 >&2 ;;
	postfix)
		postfix_settle ;;
	esac
	grep -E "^smtp-source: (fatal|warning)" "$tmp/source.out" | head -3 >&2
	awk -v a="$t0" -v b="$t1" -v srv="$srv" 'BEGIN { printf "%s %.3f\n", srv, b - a }' >>"$tmp/times"
}

printf '%-10s %8s %8s %6s  %10s  %10s  %s\n' server sessions msgs runs "median s" "msg/s" "all runs (s)"
for s in $sessions; do
	m=$(msgs_for "$s")
	: >"$tmp/times"
	r=1
	while [ $r -le "$runs" ]; do
		for srv in $servers; do
			one_run "$srv" "$s" "$m"
		done
		r=$((r + 1))
	done
	for srv in $servers; do
		all=$(awk -v s="$srv" '$1 == s { printf "%s ", $2 }' "$tmp/times")
		med=$(awk -v s="$srv" '$1 == s { print $2 }' "$tmp/times" | median)
		awk -v srv="$srv" -v s="$s" -v m="$m" -v r="$runs" -v d="$med" -v all="$all" \
		    'BEGIN { printf "%-10s %8d %8d %6d  %10.3f  %10.1f  %s\n", srv, s, m, r, d, m / d, all }'
	done
done
