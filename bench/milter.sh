#!/bin/sh
# bench/milter.sh - inbound acceptance with a milter: Postfix's smtp-source
# at 50 parallel sessions, 10 KiB messages for example.org, against
#   odrelayd         no filter (the reference)
#   odrelayd+milter  milters = the accept-all libmilter filter
#                    (tests/integration/milter/testfilter.c ... accept: it
#                    sees every command, header and body chunk, changes
#                    nothing, accepts at end of message)
#   postfix+milter   postfix-setup.sh's backup MX with smtpd_milters = the
#                    same filter (one filter process for all)
#   odrelayd+milter-noreuse  the same, with milter_reuse = no (a new
#                    filter connection and negotiation per SMTP session)
#   odrelayd+milter-nr, postfix+milter-nr  the same program as a filter
#                    that sees the same but asks not to be answered before
#                    the end of message (testfilter ... accept-nr:
#                    SMFIP_NR_* for every step), as a filter that decides
#                    at the end only would
#   odrelayd+milter-connect  the same program as a filter that accepts each
#                    connection at once (testfilter ... accept-connect):
#                    the cost of the connection and negotiation alone
# The odrelayd+milter* rows set milter_reuse = yes (BENCH_REUSE=no: no).
# Each server is run BENCH_RUNS times, interleaved, each on an empty queue;
# the median is printed with the ratios the issue asks about, and for the
# odrelayd rows the CPU time per message (median) of odrelayd (with its
# helper processes), of the filter process and of smtp-source, from
# /proc/PID/stat: unlike the rate it hardly depends on what else runs on
# the machine. Needs root
# (Postfix), cc and libmilter-dev.
#
# usage: sh bench/milter.sh [BUILDDIR]     (default: $top_builddir or .)
# env:   BENCH_SESSIONS=50 BENCH_MSGS=3000 BENCH_RUNS=3 BENCH_SIZE=10240
#        BENCH_SERVERS="odrelayd odrelayd+milter postfix+milter" (any of
#        the rows above; default: all but odrelayd+milter-connect)
#        BENCH_DIR=/var/tmp; BENCH_PF_DIR=/var/tmp/odrelay-bench-postfix-milter
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
s=${BENCH_SESSIONS:-50}
m=${BENCH_MSGS:-3000}
runs=${BENCH_RUNS:-3}
size=${BENCH_SIZE:-10240}
servers=${BENCH_SERVERS:-odrelayd odrelayd+milter-noreuse odrelayd+milter odrelayd+milter-nr postfix+milter postfix+milter-nr}
BENCH_PF_DIR=${BENCH_PF_DIR:-/var/tmp/odrelay-bench-postfix-milter}
export BENCH_PF_DIR

bench_init
machine_line

# the accept-all filter, built here
command -v cc >/dev/null || { echo "cc needed"; exit 1; }
[ -f /usr/include/libmilter/mfapi.h ] || { echo "libmilter-dev needed"; exit 1; }
cc -O2 -o "$tmp/testfilter" "$bench_dir/../tests/integration/milter/testfilter.c" \
    -lmilter -lpthread || exit 1
fport=$(free_port)
"$tmp/testfilter" "inet:$fport@127.0.0.1" accept 2>"$tmp/filter.log" &
fpid=$!
bench_pids="$bench_pids $fpid"
wait_port "$fport" || { echo "testfilter did not start"; cat "$tmp/filter.log"; exit 1; }
cport=$(free_port)
"$tmp/testfilter" "inet:$cport@127.0.0.1" accept-connect 2>"$tmp/filter2.log" &
cpid=$!
bench_pids="$bench_pids $cpid"
wait_port "$cport" || { echo "testfilter did not start"; cat "$tmp/filter2.log"; exit 1; }
nport=$(free_port)
"$tmp/testfilter" "inet:$nport@127.0.0.1" accept-nr 2>"$tmp/filter3.log" &
npid=$!
bench_pids="$bench_pids $npid"
wait_port "$nport" || { echo "testfilter did not start"; cat "$tmp/filter3.log"; exit 1; }
echo "# filter: testfilter (libmilter $(dpkg-query -W -f='${Version}' libmilter1.0.1 2>/dev/null)) accept on 127.0.0.1:$fport, accept-nr on 127.0.0.1:$nport, accept-connect on 127.0.0.1:$cport"
echo "# smtp-source -s $s -m $m -l $size -f bench@client.test -t bench@example.org -M client.test 127.0.0.1:PORT (one connection per message)"

pfport=$(free_port)
pfdir=$BENCH_PF_DIR
pf_milter=""
# point Postfix at the filter port $1 (reload when it changes)
pf_use() {
	[ "$pf_milter" = "$1" ] && return 0
	postconf -c "$pfdir/etc" -e "smtpd_milters = inet:127.0.0.1:$1"
	postfix -c "$pfdir/etc" reload >/dev/null 2>&1
	sleep 1
	pf_milter=$1
}
case " $servers " in *" postfix+milter"*)
	[ "$(id -u)" = 0 ] || { echo "postfix needs root; BENCH_SERVERS='odrelayd odrelayd+milter'"; exit 1; }
	export BENCH_PF_PORT=$pfport BENCH_PF_ROUTE="[127.0.0.1]:$(free_port)"
	sh "$bench_dir/postfix-setup.sh" teardown
	sh "$bench_dir/postfix-setup.sh" start || exit 1
	pf_started=1
	postconf -c "$pfdir/etc" -e "smtpd_milters = inet:127.0.0.1:$fport" \
	    "milter_default_action = tempfail" "milter_protocol = 6"
	postfix -c "$pfdir/etc" reload >/dev/null 2>&1
	sleep 1
	pf_milter=$fport
	echo "# postfix: $pfdir/etc, smtpd_milters = inet:127.0.0.1:$fport (postfix+milter) or :$nport (postfix+milter-nr), milter_protocol = 6"
esac

# cpu_ticks PID...: utime + stime of the processes and their children
cpu_ticks() {
	for p in "$@" $(for q in "$@"; do ps -o pid= --ppid "$q"; done); do
		cat "/proc/$p/stat" 2>/dev/null
	done | awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}
hz=$(getconf CLK_TCK)
# children_ticks: CPU of this shell's waited-for children (smtp-source)
children_ticks() {
	awk '{ sub(/^.*\) /, ""); print $14 + $15 }' /proc/$$/stat
}

postfix_settle() {
	i=0
	while [ -n "$(find "$pfdir/spool/incoming" "$pfdir/spool/active" "$pfdir/spool/maildrop" -type f 2>/dev/null | head -1)" ]; do
		i=$((i + 1)); [ $i -gt 600 ] && { echo "# postfix queue did not settle"; break; }
		sleep 0.5
	done
	sh "$bench_dir/postfix-setup.sh" clear
}

one_run() {
	srv=$1
	case $srv in
	odrelayd*)
		port=$(free_port)
		rm -rf "$tmp/od"; mkdir -p "$tmp/od"
		reuse="milter_reuse = ${BENCH_REUSE:-yes}"
		case $srv in
		odrelayd) extra=""; reuse="" ;;
		odrelayd+milter) extra="milters = inet:127.0.0.1:$fport" ;;
		odrelayd+milter-noreuse) extra="milters = inet:127.0.0.1:$fport"
			reuse="milter_reuse = no" ;;
		odrelayd+milter-nr) extra="milters = inet:127.0.0.1:$nport" ;;
		odrelayd+milter-connect) extra="milters = inet:127.0.0.1:$cport" ;;
		*) echo "unknown server $srv"; exit 1 ;;
		esac
		case $srv in
		odrelayd) filt="" ;;
		odrelayd+milter-nr) filt=$npid ;;
		odrelayd+milter-connect) filt=$cpid ;;
		*) filt=$fpid ;;
		esac
		odrelayd_conf "$tmp/od" "$port" \
		    "max_connections = 1000" "max_connections_per_ip = 1000" \
		    "$extra" "$reuse" "" "[domain example.org]" "hold = yes"
		odrelayd_start "$tmp/od" "$port" ;;
	postfix+milter)
		pf_use "$fport"
		port=$pfport ;;
	postfix+milter-nr)
		pf_use "$nport"
		port=$pfport ;;
	*) echo "unknown server $srv"; exit 1 ;;
	esac
	case $srv in odrelayd*) f0=$(cpu_ticks $filt) ;; esac
	s0=$(children_ticks)
	t0=$(now)
	"$source" -s "$s" -m "$m" -l "$size" -f bench@client.test \
	    -t bench@example.org -M client.test 127.0.0.1:"$port" \
	    >"$tmp/source.out" 2>&1 || { echo "# smtp-source failed against $srv:" >&2; head -5 "$tmp/source.out" >&2; }
	t1=$(now)
	s1=$(children_ticks)
	case $srv in
	odrelayd*)
		# CPU per message in ms: odrelayd's whole life (start-up is a
		# few ms), the filter's during the run
		awk -v srv="$srv" -v o="$(cpu_ticks "$odpid")" -v hz="$hz" \
		    -v f="$(( $(cpu_ticks $filt) - f0 ))" -v m="$m" \
		    -v c="$((s1 - s0))" \
		    'BEGIN { printf "%s %.4f %.4f %.4f\n", srv, o * 1000 / hz / m, f * 1000 / hz / m, c * 1000 / hz / m }' >>"$tmp/cpu"
		n=$(od_queued "$tmp/od")
		[ "${n:-0}" -lt "$m" ] && echo "# $srv: queue shows $n of $m messages" >&2
		odrelayd_stop >&2
		grep -iE "error|fatal|crit|milter.*(timeout|closed|failed)" "$tmp/od/odrelayd.log" | head -3 >&2 ;;
	postfix+milter*)
		postfix_settle ;;
	esac
	grep -E "^smtp-source: (fatal|warning)" "$tmp/source.out" | head -3 >&2
	awk -v a="$t0" -v b="$t1" -v srv="$srv" 'BEGIN { printf "%s %.3f\n", srv, b - a }' >>"$tmp/times"
}

: >"$tmp/times"
: >"$tmp/cpu"
r=1
while [ $r -le "$runs" ]; do
	for srv in $servers; do
		one_run "$srv"
	done
	r=$((r + 1))
done
printf '%-24s %8s %8s %6s  %10s  %10s  %s\n' server sessions msgs runs "median s" "msg/s" "all runs (s)"
for srv in $servers; do
	all=$(awk -v s="$srv" '$1 == s { printf "%s ", $2 }' "$tmp/times")
	med=$(awk -v s="$srv" '$1 == s { print $2 }' "$tmp/times" | median)
	echo "$srv $med" >>"$tmp/medians"
	awk -v srv="$srv" -v s="$s" -v m="$m" -v r="$runs" -v d="$med" -v all="$all" \
	    'BEGIN { printf "%-24s %8d %8d %6d  %10.3f  %10.1f  %s\n", srv, s, m, r, d, m / d, all }'
done
awk '{ t[$1] = $2 } END {
	n = split("odrelayd+milter-noreuse odrelayd+milter odrelayd+milter-nr odrelayd+milter-connect", r, " ")
	for (i = 1; i <= n; i++)
		if (t["odrelayd"] && t[r[i]])
			printf "# %s / odrelayd (rate): %.2f (goal >= 0.70)\n", r[i], t["odrelayd"] / t[r[i]]
	if (t["postfix+milter"] && t["odrelayd+milter"])
		printf "# odrelayd+milter / postfix+milter (rate): %.2f (goal >= 3)\n", t["postfix+milter"] / t["odrelayd+milter"]
	if (t["postfix+milter-nr"] && t["odrelayd+milter-nr"])
		printf "# odrelayd+milter-nr / postfix+milter-nr (rate): %.2f (goal >= 3)\n", t["postfix+milter-nr"] / t["odrelayd+milter-nr"]
}' "$tmp/medians"
echo "# CPU per message, ms (median of $runs; odrelayd with its helpers, the filter process and smtp-source during the run;"
echo "# cpu-ratio: (odrelayd + source alone) / (odrelayd + filter + source), the rate ratio to expect where the three only compete for CPU):"
for srv in $servers; do
	case $srv in odrelayd*) ;; *) continue ;; esac
	o=$(awk -v s="$srv" '$1 == s { print $2 }' "$tmp/cpu" | median)
	f=$(awk -v s="$srv" '$1 == s { print $3 }' "$tmp/cpu" | median)
	c=$(awk -v s="$srv" '$1 == s { print $4 }' "$tmp/cpu" | median)
	[ "$srv" = odrelayd ] && { o0=$o; c0=$c; }
	printf '#   %-24s odrelayd %.3f  filter %.3f  smtp-source %.3f' "$srv" "$o" "$f" "$c"
	[ "$srv" != odrelayd ] && [ -n "${o0:-}" ] && awk -v a="$o0" -v b="$c0" -v o="$o" -v f="$f" -v c="$c" \
	    'BEGIN { if (o + f + c > 0) printf "  cpu-ratio %.2f", (a + b) / (o + f + c) }'
	echo
done
