#!/bin/sh
# bench/accept.sh - acceptance throughput: Postfix's smtp-source at 1, 10
# and 50 parallel sessions with 10 KiB messages, against odrelayd (durable:
# fsync before 250) and against Postfix's smtp-sink (discards everything:
# the ceiling of the client and the loopback). Prints figures only; the
# lead records them in bench/RESULTS.md.
#
# usage: sh bench/accept.sh [BUILDDIR]     (default: $top_builddir or .)
# env:   BENCH_SESSIONS="1 10 50"  BENCH_MSGS_PER_SESSION=200
#        BENCH_SIZE=10240  BENCH_REUSE=1 (one connection per session, -d)
#        BENCH_DIR=/path  (queue location; default a temp dir under /tmp)
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
odrelayd=$builddir/odrelayd
sessions=${BENCH_SESSIONS:-1 10 50}
per=${BENCH_MSGS_PER_SESSION:-200}
size=${BENCH_SIZE:-10240}
reuse=${BENCH_REUSE:-0}

find_tool() {
	for p in "$(command -v "$1" 2>/dev/null)" /usr/sbin/$1 /usr/lib/postfix/sbin/$1; do
		[ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return 0; }
	done
	return 1
}
source=$(find_tool smtp-source) && sink=$(find_tool smtp-sink) || {
	echo "smtp-source/smtp-sink not found: they come with Postfix."
	echo "  Debian/Ubuntu: apt-get install postfix   (choose 'No configuration';"
	echo "  then 'systemctl disable --now postfix' if you do not want it running)"
	exit 1
}
[ -x "$odrelayd" ] || { echo "$odrelayd not built"; exit 1; }
command -v python3 >/dev/null || { echo "python3 needed to pick free ports"; exit 1; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }

tmp=$(mktemp -d "${BENCH_DIR:-/tmp}/odrelay-bench.XXXXXX")
chmod 755 "$tmp"
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

dflag=""
[ "$reuse" = 1 ] && dflag="-d"
userflag=""
[ "$(id -u)" = 0 ] && userflag="-u nobody"

# run_source LABEL PORT: one line per session count.
run_source() {
	label=$1; port=$2
	for s in $sessions; do
		m=$((s * per))
		t0=$(now)
		"$source" $dflag -s "$s" -m "$m" -l "$size" -f bench@client.test \
		    -t bench@example.org -M client.test 127.0.0.1:"$port" \
		    >"$tmp/source.out" 2>&1 || { echo "smtp-source failed:"; cat "$tmp/source.out"; }
		t1=$(now)
		awk -v l="$label" -v s="$s" -v m="$m" -v a="$t0" -v b="$t1" -v sz="$size" \
		    'BEGIN { d = b - a; printf "%-10s sessions=%-3d messages=%-6d size=%d  %7.2fs  %8.1f msg/s  %7.2f MB/s\n", l, s, m, sz, d, m / d, m * sz / d / 1e6 }'
	done
}

# --- odrelayd ------------------------------------------------------------
port=$(free_port)
cat >"$tmp/odrelay.conf" <<EOF
hostname = bench.test
queue_dir = $tmp/queue
smtp_listen = 127.0.0.1:$port
odmr_listen =
control_socket = $tmp/control.sock
passwd_file = $tmp/passwd
log_level = warning
max_connections_per_ip = 1000
max_connections = 1000
$( [ "$(id -u)" = 0 ] && echo "run_as_user = nobody" )

[domain example.org]
hold = yes
EOF
: >"$tmp/passwd"; chmod 600 "$tmp/passwd"
[ "$(id -u)" = 0 ] && chown nobody "$tmp" "$tmp/passwd"
"$odrelayd" -f -c "$tmp/odrelay.conf" 2>"$tmp/odrelayd.log" &
pid=$!
i=0
until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; do
	i=$((i + 1)); [ $i -gt 100 ] && { echo "odrelayd did not start:"; cat "$tmp/odrelayd.log"; exit 1; }
	sleep 0.1
done
echo "# $(uname -srm), $(nproc) CPUs, queue on $(df -T "$tmp" | awk 'NR==2 {print $2 " (" $1 ")"}')"
echo "# odrelayd $("$odrelayd" -V 2>/dev/null | awk '{print $2}'), smtp-source $( [ -n "$dflag" ] && echo '-d (one connection per session)' || echo '(one connection per message)')"
run_source odrelayd "$port"
kill "$pid"; wait "$pid"; st=$?; pid=""
[ $st -ne 0 ] && { echo "odrelayd exit status $st:"; tail -20 "$tmp/odrelayd.log"; }
grep -E "error|fatal" "$tmp/odrelayd.log" | head -5

# --- smtp-sink (ceiling) ---------------------------------------------------
port=$(free_port)
"$sink" $userflag 127.0.0.1:"$port" 256 >/dev/null 2>&1 &
pid=$!
sleep 0.5
run_source smtp-sink "$port"
kill "$pid"; wait "$pid" 2>/dev/null; pid=""
