#!/bin/sh
# scalerate.sh [BUILDDIR] - acceptance and flush rates with a big held
# queue against an empty one, side by side in one run (issue 16: "within
# 10% of the empty-queue figures at every size"; scale.sh measures them
# once per row, which the machine's noise hides).
#
# For each size N in BENCH_SIZES, a queue of N held 1 KiB messages over
# BENCH_DOMAINS domains (d0.test ..., round robin) is built with
# bench/mkqueue; the empty queue is built once. Both configurations have
# the same BENCH_DOMAINS held sections plus acc.test (hold = yes, routed
# to smtp-sink), so only the held mail differs. Then BENCH_ROUNDS rounds,
# each measuring the empty queue and the big one in turn (which one goes
# first alternates from round to round); one measurement is:
#   start    odrelayd -f on the queue (waits for the port)
#   accept   msg/s: smtp-source, 50 sessions, BENCH_ACCEPT 1 KiB messages
#            to u@acc.test (held)
#   flush    msg/s: ETRN acc.test, time until smtp-sink -c has received
#            all BENCH_ACCEPT (bench/smtpclient.py etrn; it then listens
#            3 s more for duplicates)
#   check    odrelayctl stats: the queue is back to its size (else a
#            warning line; a lost or duplicated message shows there too)
#   stop     SIGTERM, wait
# With each rate, odrelayd's CPU time per message (user + system of all
# its threads, /proc/PID/stat, 10 ms ticks) for the acceptance and for
# the flush (from ETRN to the end of the 3 s duplicate watch, so the
# deletions are in it): the load of the other processes on the CPUs
# moves the rates a lot and this much less. And the bytes odrelayd
# wrote per message (write_bytes of /proc/PID/io: the pages of the
# LMDB commits; a deeper B-tree would copy more pages per commit).
# One daemon at a time, started for each measurement: no idle daemon of
# the other queue runs its background work (delay and expiry cursors)
# during a measurement, and each measurement starts from the same state
# (start-up no longer reads the queue: under 0.2 s at 2M messages).
# Size 0 compares the empty queue with itself: the noise floor of the
# ratio on this machine.
#
# Prints one line per measurement, then per size: the medians of each
# queue, the ratio big/empty of the medians and the median of the
# per-round ratios (each round's pair ran within seconds of each other,
# so this one follows the load less), the CPU per message of each and
# their ratio, and the 1-minute load average (at the size's start-end).
#
# Knobs: BENCH_SIZES ("0 100000 1000000 2000000"), BENCH_DOMAINS (50000),
# BENCH_ROUNDS (7), BENCH_ACCEPT (20000), BENCH_TIMEOUT (300, per
# flush), BENCH_DIR (/var/tmp: the temporary directory and the queues;
# about 2.3 KB per held message), BENCH_REUSE=DIR keeps the big queues
# in DIR/N-D and the empty one in DIR/0-D (built when absent, never
# removed; each measurement leaves a queue at its size). For example:
#   BENCH_DIR=/var/tmp/rates sh ../bench/scalerate.sh .
# Needs smtp-source/smtp-sink (Postfix) and python3.
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
sizes=${BENCH_SIZES:-0 100000 1000000 2000000}
ndom=${BENCH_DOMAINS:-50000}
rounds=${BENCH_ROUNDS:-7}
naccept=${BENCH_ACCEPT:-20000}
timeout=${BENCH_TIMEOUT:-300}
reuse=${BENCH_REUSE:-}
mkqueue=$builddir/bench/mkqueue
[ -x "$mkqueue" ] || { echo "$mkqueue not built (make check builds it, or make bench/mkqueue)"; exit 1; }
[ -n "${BENCH_DIR:-}" ] && mkdir -p "$BENCH_DIR"
bench_init
machine_line
sinkport=$(free_port)
sinkcmd="$sink -c -u nobody 127.0.0.1:$sinkport 1000"
echo "# sizes: $sizes; $ndom domains; $rounds rounds; per measurement:"
echo "#   accept: smtp-source -s 50 -m $naccept -l 1024 -f bench@client.test -t u@acc.test 127.0.0.1:PORT"
echo "#   flush:  python3 bench/smtpclient.py etrn PORT acc.test '$sinkcmd' $naccept $timeout"

# queue_dir N: where the queue of N held messages lives (built if absent)
queue_dir() {
	if [ -n "$reuse" ]; then
		qd=$reuse/$1-$ndom
	else
		qd=$tmp/q$1
	fi
	port=$(free_port)
	if [ ! -s "$qd/queue/data.mdb" ]; then
		rm -rf "$qd"
		odrelayd_conf "$qd" "$port" "queue_map_size = 16G" \
		    "max_connections_per_ip = 200"
		if [ "$1" -gt 0 ]; then
			t0=$(now)
			"$mkqueue" "$qd/queue" 17179869184 "$1" "$ndom" 1024 0 >/dev/null || {
				echo "mkqueue failed"; exit 1; }
			echo "# built $1 messages in $qd: $(echo "$(now) - $t0" | bc -l | awk '{ printf "%.1f", $1 }') s, $(du -sh "$qd/queue" | cut -f1)"
		fi
	fi
	# a fresh port and the sections each time (the file is small but for
	# the sections; a kept queue may come from an older run)
	odrelayd_conf "$qd" "$port" "queue_map_size = 16G" \
	    "max_connections_per_ip = 200"
	{
		printf '[domain acc.test]\nhold = yes\nroute = 127.0.0.1:%s\n' "$sinkport"
		awk -v n="$ndom" 'BEGIN {
			for (i = 0; i < n; i++) printf "[domain d%d.test]\nhold = yes\n", i
		}'
	} >>"$qd/odrelay.conf"
	echo "$port" >"$qd/port"
}

# cpu_ticks PID: utime + stime of all its threads, in clock ticks
cpu_ticks() {
	sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
hz=$(getconf CLK_TCK)
# io_bytes PID: bytes written to storage on its behalf
io_bytes() {
	awk '$1 == "write_bytes:" { print $2 }' "/proc/$1/io"
}

# measure N DIR ROUND: one measurement; appends "accept flush acpu fcpu" to
# $tmp/res.N.empty or res.N.big, prints the line
measure() {
	m_n=$1; m_dir=$2; m_round=$3
	m_port=$(cat "$m_dir/port")
	odrelayd_start "$m_dir" "$m_port"
	m_base=$(od_queued "$m_dir")
	c0=$(cpu_ticks "$odpid") w0=$(io_bytes "$odpid")
	t1=$(now)
	"$source" -s 50 -m "$naccept" -l 1024 -f bench@client.test \
	    -t u@acc.test 127.0.0.1:"$m_port" >/dev/null 2>&1
	acc=$(echo "$naccept / ($(now) - $t1)" | bc -l | awk '{ printf "%.0f", $1 }')
	c1=$(cpu_ticks "$odpid") w1=$(io_bytes "$odpid")
	res=$(python3 "$bench_dir/smtpclient.py" etrn "$m_port" acc.test \
	    "$sinkcmd" "$naccept" "$timeout")
	c2=$(cpu_ticks "$odpid") w2=$(io_bytes "$odpid")
	awrite=$(( (w1 - w0) / naccept )) fwrite=$(( (w2 - w1) / naccept ))
	# microseconds of CPU per message
	acpu=$(( (c1 - c0) * 1000000 / hz / naccept ))
	fcpu=$(( (c2 - c1) * 1000000 / hz / naccept ))
	fsec=$(echo "$res" | awk '{ print $1 }')
	flush=$(echo "$naccept / $fsec" | bc -l | awk '{ printf "%.0f", $1 }')
	# the deletions follow the deliveries closely; give them a moment
	i=0
	while m_after=$(od_queued "$m_dir"); [ "${m_after:-x}" != "$m_base" ] && [ $i -lt 50 ]; do
		sleep 0.1; i=$((i + 1))
	done
	odrelayd_stop
	echo "$acc $flush $acpu $fcpu $awrite $fwrite" >>"$tmp/res.$m_n.$m_kind"
	printf "%-9s %5s %-6s %8s %7s %7s %8s %7s %7s %8s %6s  %s\n" "$m_n" "$m_round" "$m_kind" \
	    "$acc" "$acpu" "$awrite" "$flush" "$fcpu" "$fwrite" "$fsec" "$(cut -d' ' -f1 /proc/loadavg)" \
	    "$(echo "$res" | awk '{ print $3 }')$( [ "${m_after:-x}" != "$m_base" ] && echo " queue $m_base -> $m_after")"
}

col() { awk -v c="$1" '{ print $c }' "$2" | median; }

queue_dir 0
emptydir=$qd
printf "%-9s %5s %-6s %8s %7s %7s %8s %7s %7s %8s %6s  %s\n" size round queue accept/s cpu-us write-B flush/s cpu-us write-B flush-s load check
summary=""
for n in $sizes; do
	if [ "$n" = 0 ]; then
		bigdir=$emptydir
	else
		queue_dir "$n"
		bigdir=$qd
	fi
	: >"$tmp/res.$n.empty"; : >"$tmp/res.$n.big"
	load0=$(cut -d' ' -f1 /proc/loadavg)
	for r in $(seq "$rounds"); do
		if [ $((r % 2)) = 1 ]; then order="empty big"; else order="big empty"; fi
		for m_kind in $order; do
			if [ "$m_kind" = empty ]; then
				measure "$n" "$emptydir" "$r"
			else
				measure "$n" "$bigdir" "$r"
			fi
		done
	done
	# per-round ratios: line k of each file is round k
	ratios=$(paste "$tmp/res.$n.empty" "$tmp/res.$n.big" |
	    awk '{ printf "%.3f %.3f\n", $7 / $1, $8 / $2 }')
	ea=$(col 1 "$tmp/res.$n.empty"); ba=$(col 1 "$tmp/res.$n.big")
	ef=$(col 2 "$tmp/res.$n.empty"); bf=$(col 2 "$tmp/res.$n.big")
	eac=$(col 3 "$tmp/res.$n.empty"); bac=$(col 3 "$tmp/res.$n.big")
	efc=$(col 4 "$tmp/res.$n.empty"); bfc=$(col 4 "$tmp/res.$n.big")
	eaw=$(col 5 "$tmp/res.$n.empty"); baw=$(col 5 "$tmp/res.$n.big")
	efw=$(col 6 "$tmp/res.$n.empty"); bfw=$(col 6 "$tmp/res.$n.big")
	ra=$(echo "$ratios" | awk '{ print $1 }' | median)
	rf=$(echo "$ratios" | awk '{ print $2 }' | median)
	line=$(printf "%-9s %6s | %6s %6s %5.2f %5.2f | %5s %5s %5.2f | %5s %5s | %6s %6s %5.2f %5.2f | %5s %5s %5.2f | %5s %5s | %s-%s" \
	    "$n" "$ndom" "$ea" "$ba" "$(echo "$ba / $ea" | bc -l)" "$ra" \
	    "$eac" "$bac" "$(echo "$bac / $eac" | bc -l)" "$eaw" "$baw" \
	    "$ef" "$bf" "$(echo "$bf / $ef" | bc -l)" "$rf" \
	    "$efc" "$bfc" "$(echo "$bfc / $efc" | bc -l)" "$efw" "$bfw" \
	    "$load0" "$(cut -d' ' -f1 /proc/loadavg)")
	summary="$summary$line
"
	echo "# $line"
	if [ "$n" != 0 ] && [ -z "$reuse" ]; then
		rm -rf "$bigdir"
	fi
done
echo
echo "# medians of $rounds rounds; e = empty queue, b = big; ratio = b/e of the medians, (r) = median of"
echo "# the per-round ratios; cpu = odrelayd CPU microseconds per message; wr = bytes written per message"
printf "%-9s %6s | %6s %6s %5s %5s | %5s %5s %5s | %5s %5s | %6s %6s %5s %5s | %5s %5s %5s | %5s %5s | %s\n" \
    size domains acc-e acc-b ratio "(r)" cpu-e cpu-b ratio wr-e wr-b fl-e fl-b ratio "(r)" cpu-e cpu-b ratio wr-e wr-b load
printf "%s" "$summary"
