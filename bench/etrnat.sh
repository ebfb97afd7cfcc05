#!/bin/sh
# etrnat.sh BEFORE_BUILDDIR AFTER_BUILDDIR - ETRN @NAME reply latency with
# BENCH_DOMAINS (50000) domain sections (issue 16: the sections at or
# under NAME were found by a walk of all of them, on the event loop).
# The queue is empty, so the figure is the search alone: on one session,
# BENCH_N (201) "ETRN @dK.test" for K spread over the file (251, no mail)
# and as many "ETRN @nosuch.test" (459), each reply timed; the medians
# and 90th percentiles in ms. The two builds' odrelayd run in turn, one
# at a time, BENCH_ROUNDS (3) rounds. Every process is killed by PID.
set -u
[ $# -eq 2 ] || { echo "usage: sh bench/etrnat.sh BEFORE_BUILDDIR AFTER_BUILDDIR" >&2; exit 2; }
before=$(cd "$1" && pwd) || exit 2
after=$(cd "$2" && pwd) || exit 2
here=$(cd "$(dirname "$0")" && pwd)
ndom=${BENCH_DOMAINS:-50000}
n=${BENCH_N:-201}
rounds=${BENCH_ROUNDS:-3}
out=$(mktemp -d /tmp/odrelay-etrnat.XXXXXX) || exit 1
chmod 755 "$out"
od=
trap '[ -n "$od" ] && kill $od 2>/dev/null; rm -rf "$out"' EXIT INT TERM
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$out/queue"
: >"$out/passwd"
chmod 600 "$out/passwd"
{
	echo "hostname = relay.bench.test"
	echo "queue_dir = $out/queue"
	echo "smtp_listen = 127.0.0.1:$port"
	echo "odmr_listen ="
	echo "control_socket = $out/control.sock"
	echo "passwd_file = $out/passwd"
	echo "log_level = warning"
	echo "run_as_user = $(id -un)"
	echo "etrn_rate = 1000000"
	awk -v n="$ndom" 'BEGIN { for (i = 0; i < n; i++)
		printf "[domain d%d.test]\nhold = yes\n", i }'
} >"$out/odrelay.conf"

cat >"$out/probe.py" <<'EOF'
import socket, sys, time
port, n, ndom = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port), 10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
f = s.makefile("rb")
def reply():
	while True:
		line = f.readline()
		if not line:
			raise EOFError
		if len(line) < 4 or line[3:4] == b" ":
			return line[:3].decode()
reply()
s.sendall(b"EHLO probe.test\r\n")
reply()
def run(nodes, want):
	t = []
	for node in nodes:
		t0 = time.monotonic()
		s.sendall(("ETRN @%s\r\n" % node).encode())
		code = reply()
		t.append((time.monotonic() - t0) * 1000)
		if code != want:
			sys.exit("ETRN @%s: %s, not %s" % (node, code, want))
	t.sort()
	return "%.3f %.3f" % (t[len(t) // 2], t[len(t) * 9 // 10])
hit = run(["d%d.test" % (k * (ndom - 1) // (n - 1)) for k in range(n)], "251")
miss = run(["nosuch.test"] * n, "459")
print(hit, miss)
EOF

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $ndom sections, empty queue; $n ETRN @dK.test (251) then $n ETRN @nosuch.test (459), one session"
printf "%-6s %-7s %12s %12s %12s %12s\n" round build "@dK-med-ms" "@dK-p90-ms" "@none-med-ms" "@none-p90-ms"
r=1
while [ "$r" -le "$rounds" ]; do
	for which in before after; do
		eval b=\$$which
		rm -rf "$out/queue"
		mkdir -p "$out/queue"
		"$b/odrelayd" -f -c "$out/odrelay.conf" 2>>"$out/odrelayd.log" &
		od=$!
		python3 "$here/scaleprobe.py" greet "$port" 60 >/dev/null
		res=$(python3 "$out/probe.py" "$port" "$n" "$ndom") || res="failed"
		kill "$od"
		wait "$od" 2>/dev/null
		od=
		# shellcheck disable=SC2086
		printf "%-6s %-7s %12s %12s %12s %12s\n" "$r" "$which" $res
	done
	r=$((r + 1))
done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
