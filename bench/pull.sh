#!/bin/sh
# bench/pull.sh - ATRN pull throughput (issue 19): N held 10 KiB messages
# for example.org, pulled over ODMR by
#   fetchmail  fetchmail's ODMR mode (it relays the reversed session line
#              by line into its smtphost), into Postfix's smtp-sink
#   fetchmail-nd  the same with TCP_NODELAY on fetchmail's connection to
#              its smtphost only (bench/nodelay.c, LD_PRELOAD): shows the
#              stall left on that connection, which the provider cannot reach
#   odpull     odrelay's own customer, --tls none, into smtp-sink
# from two builds of odrelayd: "before" (commit 4518849, built once into
# BENCH_BEFORE, default /var/tmp/odrelay-before-4518849/b) and "after"
# (BUILDDIR); each uses its own odpull. Each run loads a fresh queue
# (smtp-source, 10 sessions), then times the pull from the client's start
# to its exit, and checks that the sink got every message once and the
# queue is empty. Builds, clients and runs are interleaved; per-run msg/s
# and medians are printed, and for odpull its own CPU time (user + system
# seconds, from /usr/bin/time when present: steadier than the wall clock
# on a shared machine). Prints figures only.
#
# usage: sh bench/pull.sh [BUILDDIR]
# env:   BENCH_N=2000  BENCH_RUNS=3  BENCH_SIZE=10240  BENCH_TIMEOUT=600
#        BENCH_CLIENTS="fetchmail fetchmail-nd odpull"  BENCH_BUILDS="before after"
#        BENCH_BEFORE=DIR (a build of 4518849; built from git if missing)
#        BENCH_ODPULL=PATH (one odpull for both builds: compares the
#        providers alone)
#        BENCH_DIR=/var/tmp
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
n=${BENCH_N:-2000}
runs=${BENCH_RUNS:-3}
size=${BENCH_SIZE:-10240}
timeout=${BENCH_TIMEOUT:-600}
clients=${BENCH_CLIENTS:-fetchmail fetchmail-nd odpull}
builds=${BENCH_BUILDS:-before after}
before=${BENCH_BEFORE:-/var/tmp/odrelay-before-4518849/b}
srcdir=$(cd "$bench_dir/.." && pwd)

case " $builds " in *" before "*)
	if [ ! -x "$before/odrelayd" ] || [ ! -x "$before/odpull" ]; then
		# A separate tree: git archive of the commit, built out of tree.
		top=${before%/b}
		[ "$top" = "$before" ] && { echo "BENCH_BEFORE must end in /b to be built here"; exit 1; }
		echo "# building 4518849 into $before"
		rm -rf "$top"; mkdir -p "$top/src" "$before"
		git -C "$srcdir" archive 4518849 | tar -x -C "$top/src" || exit 1
		(cd "$top/src" && autoreconf -fi >/dev/null 2>&1 && cd "$before" &&
		    ../src/configure >/dev/null && make -j2 odrelayd odrelayctl odpull >/dev/null 2>&1) ||
		    { echo "build of 4518849 failed"; exit 1; }
	fi
esac
case " $clients " in *" fetchmail"*)
	command -v fetchmail >/dev/null || { echo "fetchmail needed (apt-get install fetchmail)"; exit 1; }
esac

bench_init
machine_line
case " $clients " in *" fetchmail-nd "*)
	cc -shared -fPIC -o "$tmp/nodelay.so" "$bench_dir/nodelay.c" -ldl ||
	    { echo "cannot build bench/nodelay.c"; exit 1; }
esac
echo "# before: $before, after: $builddir; $(fetchmail --version 2>/dev/null | head -1)"
echo "# load: smtp-source -s 10 -m $n -l $size -f bench@client.test -t bench@example.org 127.0.0.1:PORT"
echo "# fetchmail: poll 127.0.0.1 protocol ODMR port P fetchdomains example.org smtphost 127.0.0.1/SINK (--nodetach)"
echo "# odpull (${BENCH_ODPULL:-each build's own}): --server 127.0.0.1:P --tls none --domain example.org --deliver 127.0.0.1:SINK"
echo "# sink: smtp-sink -c 127.0.0.1:SINK 1000"

suser=""
[ "$(id -u)" = 0 ] && suser="-u nobody"

one_run() {
	build=$1 client=$2 cpu=-
	case $build in
	before) bdir=$before ;;
	*) bdir=$builddir ;;
	esac
	port=$(free_port) oport=$(free_port) sinkport=$(free_port)
	rm -rf "$tmp/od"; mkdir -p "$tmp/od"
	odrelayd_conf "$tmp/od" "$port" "" "[domain example.org]" "hold = yes"
	sed -i "s/^odmr_listen .*/odmr_listen    = 127.0.0.1:$oport/" "$tmp/od/odrelay.conf"
	echo bench | "$bdir/odrelayctl" -c "$tmp/od/odrelay.conf" passwd add bench example.org >/dev/null ||
	    { echo "passwd add failed"; return; }
	odrelayd=$bdir/odrelayd
	odrelayd_start "$tmp/od" "$port"
	"$source" -s 10 -m "$n" -l "$size" -f bench@client.test -t bench@example.org \
	    -M client.test 127.0.0.1:"$port" >"$tmp/source.out" 2>&1 ||
	    { echo "# smtp-source failed:"; head -3 "$tmp/source.out"; }
	q=$(builddir=$bdir od_queued "$tmp/od")
	"$sink" -c $suser 127.0.0.1:"$sinkport" 1000 >"$tmp/sink.out" 2>&1 &
	spid=$!
	bench_pids="$bench_pids $spid"
	wait_port "$sinkport"
	case $client in
	fetchmail*)
		pre=""
		[ "$client" = fetchmail-nd ] && pre="LD_PRELOAD=$tmp/nodelay.so NODELAY_PORT=$sinkport"
		mkdir -p "$tmp/home"
		printf 'poll 127.0.0.1 via 127.0.0.1 protocol ODMR port %s user "bench" password "bench" fetchdomains example.org smtphost 127.0.0.1/%s\n' \
		    "$oport" "$sinkport" >"$tmp/fetchmailrc"
		chmod 600 "$tmp/fetchmailrc"
		t0=$(now)
		env $pre HOME="$tmp/home" FETCHMAILHOME="$tmp/home" timeout "$timeout" fetchmail -f "$tmp/fetchmailrc" \
		    --nosyslog --nodetach --pidfile "$tmp/fetchmail.pid" >"$tmp/client.out" 2>&1
		st=$?
		t1=$(now) ;;
	odpull)
		timer=""
		[ -x /usr/bin/time ] && timer="/usr/bin/time -o $tmp/cpu -f %U+%S"
		rm -f "$tmp/cpu"
		t0=$(now)
		ODPULL_PASSWORD=bench timeout "$timeout" $timer "${BENCH_ODPULL:-$bdir/odpull}" --server 127.0.0.1:"$oport" \
		    --user bench --tls none --domain example.org \
		    --deliver 127.0.0.1:"$sinkport" >"$tmp/client.out" 2>&1
		st=$?
		t1=$(now)
		[ -s "$tmp/cpu" ] && cpu=$(tail -1 "$tmp/cpu" | awk -F+ '{ printf "%.2f", $1 + $2 }') ;;
	esac
	# duplicates would show as more than n
	sleep 1
	got=$(grep -o 'mesg=[0-9]*' "$tmp/sink.out" | tail -1 | cut -d= -f2)
	left=$(builddir=$bdir od_queued "$tmp/od")
	kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
	bench_pids=$(echo "$bench_pids" | tr ' ' '\n' | grep -vx "$spid" | tr '\n' ' ')
	odrelayd_stop
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	rate=$(awk -v s="$secs" -v n="${got:-0}" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')
	ok=ok
	[ "${got:-0}" != "$n" ] || [ "${left:-0}" != 0 ] || [ "$st" != 0 ] && ok="BAD(exit $st)"
	[ "$ok" != ok ] && tail -3 "$tmp/client.out" | sed 's/^/#   /'
	echo "$build $client $rate $cpu" >>"$tmp/rates"
	printf '%-7s %-12s %4d %7s %8s %6s %6s %9s %6s  %s\n' "$build" "$client" "$r" "$q" "$secs" "${got:-0}" "${left:-?}" "$rate" "$cpu" "$ok"
}

printf '%-7s %-12s %4s %7s %8s %6s %6s %9s %6s  %s\n' build client run queued "pull s" sunk left "msg/s" "cpu s" status
: >"$tmp/rates"
r=1
while [ "$r" -le "$runs" ]; do
	for client in $clients; do
		for build in $builds; do
			one_run "$build" "$client"
		done
	done
	r=$((r + 1))
done
for client in $clients; do
	for build in $builds; do
		med=$(awk -v b="$build" -v c="$client" '$1 == b && $2 == c { print $3 }' "$tmp/rates" | median)
		printf '%-7s %-12s median %s msg/s (runs: %s)\n' "$build" "$client" "$med" \
		    "$(awk -v b="$build" -v c="$client" '$1 == b && $2 == c { printf "%s ", $3 }' "$tmp/rates")"
		[ "$client" = odpull ] || continue
		med=$(awk -v b="$build" -v c="$client" '$1 == b && $2 == c && $4 != "-" { print $4 }' "$tmp/rates" | median)
		printf '%-7s %-12s median %s s of CPU (runs: %s)\n' "$build" "$client" "$med" \
		    "$(awk -v b="$build" -v c="$client" '$1 == b && $2 == c { printf "%s ", $4 }' "$tmp/rates")"
	done
done
