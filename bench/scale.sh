#!/bin/sh
# scale.sh [BUILDDIR] - odrelayd with large held queues (issue 16).
#
# For each size in BENCH_SIZES and each domain count in BENCH_DOMAINS, a
# queue of that many held 1 KiB messages spread round robin over the
# domains (plus 10 for small.test) is built with bench/mkqueue (the
# queue's own writer, seconds per million), then odrelayd is started on
# it and measured:
#   start     seconds from the fork of odrelayd to a readable 220 greeting
#   stall     longest NOOP reply delay (ms) seen by a client sending NOOP
#             every 10 ms from the greeting to the end (delay_warning is
#             1s, so the expiry/delay cursor walks every message during
#             the run), and its 99th percentile
#   etrn      ETRN small.test (10 messages) reply latency, ms
#   q-dom     odrelayctl queue small.test (10 of them), s
#   stats     odrelayctl stats, s
#   q-all     odrelayctl queue (whole listing to /dev/null), s
#   accept    msg/s, smtp-source 50 sessions x BENCH_ACCEPT 1 KiB messages
#   flush     msg/s for the big domain (d0.test, 1-domain runs only):
#             messages delivered to smtp-sink until it is empty or
#             BENCH_FLUSH_SEC seconds are over
#   rss       RssAnon / RssFile of odrelayd in MB (after acceptance)
#   disk      bytes per message: data.mdb blocks / messages, and pages in
#             use / messages (the rest is the delivery reserve and free
#             pages)
#   term      seconds from SIGTERM to exit (a flush may be running)
#   load      the 1-minute load average at the end of the row (the
#             machine is shared: read the other figures against it)
# Size 0 (only the 10 small.test messages) is the empty-queue baseline.
# q-dom and stats are the medians of BENCH_CTL_RUNS (5) runs each.
# Knobs: BENCH_SIZES ("0 10000 100000 1000000 2000000"), BENCH_DOMAINS
# ("1 50000"), BENCH_ACCEPT (20000), BENCH_FLUSH_SEC (10), BENCH_DIR
# (/var/tmp), BENCH_TRACE (a file for phase times and slow replies),
# BENCH_TURN_MS (odrelayd logs its turns over that many ms, see
# ODRELAY_SLOW_TURN_MS in odrelayd(8), and a line under each row sums them
# up: how many, the longest wall and CPU time and run delay, major page
# faults; a slow reply with no long turn was a wait for a CPU). Needs
# smtp-source/smtp-sink (Postfix) and python3.
#
# Re-measuring on a queue built once: BENCH_REUSE=DIR keeps each row's
# queue in DIR/N-D (N messages, D domains; built there by mkqueue when
# absent, never removed) and runs only what leaves it unchanged: start,
# stall, q-dom and stats (the others print "-"); the NOOP probe then runs
# for BENCH_IDLE_SEC (10) more seconds. Run k on a queue uses
# delay_warning = ks, an age with no saved position yet, so the delay
# cursor reads every message again as on a first start. For example, the 2M
# messages over 50,000 domains, built on the first run (4.4 GB, about a
# minute) and reused after:
#   BENCH_REUSE=/var/tmp/odrelay-scale BENCH_SIZES=2000000 \
#       BENCH_DOMAINS=50000 sh ../bench/scale.sh .
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
bench_init
sizes=${BENCH_SIZES:-0 10000 100000 1000000 2000000}
domcounts=${BENCH_DOMAINS:-1 50000}
naccept=${BENCH_ACCEPT:-20000}
flushsec=${BENCH_FLUSH_SEC:-10}
ctlruns=${BENCH_CTL_RUNS:-5}
reuse=${BENCH_REUSE:-}
idlesec=${BENCH_IDLE_SEC:-10}
mkqueue=$builddir/bench/mkqueue
ctl=$builddir/odrelayctl
probe=$bench_dir/scaleprobe.py
[ -x "$mkqueue" ] || { echo "$mkqueue not built (make check builds it, or make bench/mkqueue)"; exit 1; }
machine_line
echo "# sizes: $sizes; domains: $domcounts; accept $naccept msgs at 50 sessions"

sinkport=$(free_port)
"$sink" -c -u nobody 127.0.0.1:$sinkport 1000 >"$tmp/sink.out" 2>&1 &
sinkpid=$!
bench_pids="$bench_pids $sinkpid"
wait_port "$sinkport"

# mark PHASE: with BENCH_TRACE=FILE, when each phase began (to match
# the slow NOOP replies the probe lists)
mark() {
	[ -n "${BENCH_TRACE:-}" ] && echo "$(date +%s.%N | cut -c1-14) $n/$ndom $1" >>"$BENCH_TRACE"
	return 0
}

# elapsed RUNS CMD...: run RUNS times, print the median seconds
elapsed() {
	nr=$1; shift
	for r in $(seq "$nr"); do
		t0=$(now)
		"$@" >/dev/null 2>&1
		echo "$(now) - $t0" | bc -l
	done | median | awk '{ printf "%.3f", $1 }'
}

queued() {
	"$ctl" -c "$dir/odrelay.conf" stats 2>/dev/null | awk '/^messages:/ { print $2 }'
}

# row_end: stop the probe and odrelayd, print the row
row_end() {
	kill "$noopid"; wait "$noopid" 2>/dev/null
	stall=$(awk 'NR == 1 { printf "%s(%s)", $1, $2 }' "$tmp/noop.out")
	[ -n "${BENCH_TRACE:-}" ] && sed -n 2p "$tmp/noop.out" |
	    tr ' ' '\n' | sed "s|^|slow $n/$ndom |" >>"$BENCH_TRACE"
	t2=$(now)
	kill "$wrapper"; wait "$wrapper"
	term=$(echo "$(now) - $t2" | bc -l | awk '{ printf "%.3f", $1 }')
	bench_pids="$sinkpid"
	perm=$((fileb / total))
	peru=$(( ${used:-0} / total ))
	printf "%-8s %6s %6s %14s %9s %6s %6s %7s %7s %7s %11s %11s %15s %6s %5s\n" \
	    "$total" "$ndom" "$start" "$stall" "$etrn" "$qdom" "$stats" \
	    "$qall" "$acc" "$flush" "$anon" "$filemb" "$perm($peru)" "$term" \
	    "$(cut -d' ' -f1 /proc/loadavg)"
	# With BENCH_TURN_MS: odrelayd's own view of its slow turns (its
	# ODRELAY_SLOW_TURN_MS log, odrelayd(8) LOGGING) under the row.
	[ -n "${BENCH_TURN_MS:-}" ] && tail -n +$((logstart + 1)) "$dir/odrelayd.log" |
	    sed -n 's/^.*slow turn at //p' | awk -v t="$BENCH_TURN_MS" '
		{ if ($2 > w) w = $2; if ($5 > c) c = $5; if ($8 > q) q = $8
		  f += $14; if ($2 > 10) n10++; if ($5 > 10) c10++ }
		END { printf "#   turns over %s ms: %d; over 10 ms: %d wall, %d cpu; " \
		    "longest wall %.1f, cpu %.1f, run delay %.1f ms; major faults %d\n",
		    t, NR, n10, c10, w, c, q, f }'
	return 0
}

printf "%-8s %6s %6s %14s %9s %6s %6s %7s %7s %7s %11s %11s %15s %6s %5s\n" \
    messages domains start "stall-ms(p99)" etrn-ms q-dom stats q-all accept flush "rss-anon/MB" "rss-file/MB" "disk-B/msg(use)" term load
for n in $sizes; do
	for ndom in $domcounts; do
		if [ -n "$reuse" ]; then
			dir=$reuse/$n-$ndom
			mkdir -p "$dir"
			# An age not used before on this queue (1s, 2s, ...):
			# its cursor has no saved position, so it reads every
			# message again.
			runs=$(( $(cat "$dir/runs" 2>/dev/null || echo 0) + 1 ))
			echo "$runs" >"$dir/runs"
			warn="delay_warning = ${runs}s"
		else
			dir=$tmp/run
			rm -rf "$dir"
			warn="delay_warning = 1s"
		fi
		port=$(free_port)
		odrelayd_conf "$dir" "$port" "queue_map_size = 16G" \
		    "$warn" "max_connections_per_ip = 200"
		{
			printf '[domain small.test]\nhold = yes\nroute = 127.0.0.1:%s\n' "$sinkport"
			awk -v n="$ndom" -v sp="$sinkport" 'BEGIN {
				for (i = 0; i < n; i++) {
					printf "[domain d%d.test]\nhold = yes\n", i
					if (i == 0) printf "route = 127.0.0.1:%s\n", sp
				}
			}'
		} >>"$dir/odrelay.conf"
		if [ -z "$reuse" ] || [ ! -s "$dir/queue/data.mdb" ]; then
			"$mkqueue" "$dir/queue" 17179869184 "$n" "$ndom" 1024 10 >/dev/null || {
				echo "mkqueue failed"; exit 1; }
		fi
		total=$((n + 10))
		fileb=$(du -B1 "$dir/queue/data.mdb" | awk '{ print $1 }')

		# Timed by the probe from its fork of odrelayd to a readable 220
		# (the interpreter's start-up, 40 ms to 0.2 s on a loaded
		# machine, is not odrelayd's); SIGTERM to it reaches odrelayd.
		rm -f "$tmp/start.out"
		logstart=$(cat "$dir/odrelayd.log" 2>/dev/null | wc -l)
		env ${BENCH_TURN_MS:+ODRELAY_SLOW_TURN_MS=$BENCH_TURN_MS} \
		    python3 "$probe" start "$port" 60 "$tmp/start.out" \
		    "$odrelayd" -f -c "$dir/odrelay.conf" 2>>"$dir/odrelayd.log" &
		wrapper=$!
		bench_pids="$bench_pids $wrapper"
		i=0
		until [ -s "$tmp/start.out" ] || [ $i -gt 6500 ]; do
			sleep 0.01; i=$((i + 1))
		done
		start=$(awk '{ print $1 }' "$tmp/start.out")
		odpid=$(awk '{ print $2 }' "$tmp/start.out")
		python3 "$probe" noop "$port" "$tmp/noop.out" &
		noopid=$!
		bench_pids="$bench_pids $noopid"
		mark started
		sleep 3
		mark ctl
		qdom=$(elapsed "$ctlruns" "$ctl" -c "$dir/odrelay.conf" queue small.test)
		stats=$(elapsed "$ctlruns" "$ctl" -c "$dir/odrelay.conf" stats)
		if [ -n "$reuse" ]; then
			# only what leaves the queue as it is
			mark idle
			sleep "$idlesec"
			etrn=- used=0 qall=- acc=- flush=-
			anon=$(awk '/^RssAnon:/ { printf "%.1f", $2 / 1024 }' /proc/$odpid/status)
			filemb=$(awk '/^RssFile:/ { printf "%.1f", $2 / 1024 }' /proc/$odpid/status)
			row_end
			continue
		fi
		mark etrn
		etrn=$(python3 "$probe" etrn "$port" small.test | awk '{ print $1 }')
		sleep 1
		used=$("$ctl" -c "$dir/odrelay.conf" stats --json 2>/dev/null |
		    python3 -c 'import json,sys; print(json.load(sys.stdin)["space"]["map_used"])' 2>/dev/null)
		mark q-all
		qall=$(elapsed 1 "$ctl" -c "$dir/odrelay.conf" queue)
		mark accept
		t1=$(now)
		"$source" -s 50 -m "$naccept" -l 1024 -f bench@client.test \
		    -t u@small.test 127.0.0.1:"$port" >/dev/null 2>&1
		acc=$(echo "$naccept / ($(now) - $t1)" | bc -l | awk '{ printf "%.0f", $1 }')
		anon=$(awk '/^RssAnon:/ { printf "%.1f", $2 / 1024 }' /proc/$odpid/status)
		filemb=$(awk '/^RssFile:/ { printf "%.1f", $2 / 1024 }' /proc/$odpid/status)
		flush=-
		if [ "$ndom" = 1 ] && [ "$n" -gt 0 ]; then
			# Messages delivered per second until d0.test is empty or
			# BENCH_FLUSH_SEC is over, counted from the queue's totals.
			mark flush
			before=$(queued)
			rest=$((before - n))
			t3=$(now)
			python3 "$probe" etrn "$port" d0.test >/dev/null
			end=$(echo "$t3 + $flushsec" | bc -l)
			after=$before
			while [ "$(echo "$(now) < $end" | bc -l)" = 1 ]; do
				sleep 0.2
				after=$(queued)
				[ "$after" -le "$rest" ] && break
			done
			flush=$(echo "($before - $after) / ($(now) - $t3)" | bc -l |
			    awk '{ printf "%.0f", $1 }')
		fi
		row_end
		rm -rf "$dir"
	done
done
