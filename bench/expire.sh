#!/bin/sh
# expire.sh [BUILDDIR] - one message due among millions (issue 16).
#
# Builds BENCH_N (2,000,000) held 1 KiB messages over BENCH_DOMAINS
# (50,000) domains with bench/mkqueue in BENCH_EXPIRE_DIR
# (/var/tmp/expire, removed at the end unless BENCH_KEEP=1), starts
# odrelayd on it, then sends one message over SMTP to short.test, whose
# queue_lifetime is BENCH_LIFE (5) seconds: the newest message, so a walk
# in arrival order would read every other one before it. Prints:
#   due-to-dsn  seconds from when the message is due (its arrival second
#               plus the lifetime) to when odrelay_recipients_bounced_total
#               shows it returned (its DSN is then committed); the
#               scheduler looks once a second, so up to about 1 s is the
#               tick
#   read        odrelay_expiry_envelopes_read_total by walk (queue,
#               domain) at that point
#   stall       longest NOOP reply delay (ms) and its p99, a client
#               sending NOOP every 10 ms from the greeting to the end
#   load        1-minute load average at the end (the machine is shared)
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
n=${BENCH_N:-2000000}
ndom=${BENCH_DOMAINS:-50000}
life=${BENCH_LIFE:-5}
dir=${BENCH_EXPIRE_DIR:-/var/tmp/expire}
odrelayd=$builddir/odrelayd
ctl=$builddir/odrelayctl
mkqueue=$builddir/bench/mkqueue
probe=$(dirname "$0")/scaleprobe.py
[ -x "$mkqueue" ] || { echo "$mkqueue not built (make check builds it)"; exit 1; }
[ -x "$odrelayd" ] || { echo "$odrelayd not built"; exit 1; }
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	[ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT INT TERM
tmp=$dir
echo "# $(uname -srm), $(nproc) CPUs, load at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $n held 1 KiB messages over $ndom domains, 1 for short.test (queue_lifetime ${life}s) sent after the start"

port=$(free_port)
mport=$(free_port)
if [ ! -s "$dir/queue/data.mdb" ]; then
	rm -rf "$dir"
	odrelayd_conf "$dir" "$port"
	t0=$(now)
	"$mkqueue" "$dir/queue" 17179869184 "$n" "$ndom" 1024 0 >/dev/null ||
	    { echo "mkqueue failed"; exit 1; }
	echo "# queue built in $(echo "$(now) - $t0" | bc -l | awk '{ printf "%.0f", $1 }') s, $(du -sh "$dir/queue/data.mdb" | cut -f1)"
fi
odrelayd_conf "$dir" "$port" "queue_map_size = 16G" \
    "metrics_listen = 127.0.0.1:$mport"
{
	printf '[domain short.test]\nhold = yes\nqueue_lifetime = %ss\n' "$life"
	awk -v n="$ndom" 'BEGIN { for (i = 0; i < n; i++)
		printf "[domain d%d.test]\nhold = yes\n", i }'
} >>"$dir/odrelay.conf"

rm -f "$dir/start.out"
python3 "$probe" start "$port" 120 "$dir/start.out" \
    "$odrelayd" -f -c "$dir/odrelay.conf" 2>>"$dir/odrelayd.log" &
pids="$pids $!"
i=0
until [ -s "$dir/start.out" ] || [ $i -gt 12000 ]; do sleep 0.01; i=$((i + 1)); done
python3 "$probe" noop "$port" "$dir/noop.out" &
noopid=$!
pids="$pids $noopid"
sleep 2

python3 - "$port" "$mport" "$life" <<'PY'
import re, smtplib, sys, time, urllib.request
port, mport, life = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def metrics():
	with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport,
	    timeout=30) as r:
		t = r.read().decode()
	out = {"queue": 0, "domain": 0, "bounced": 0}
	for m in re.finditer(r'^odrelay_expiry_envelopes_read_total\{walk="(\w+)"\} (\d+)', t, re.M):
		out[m.group(1)] = int(m.group(2))
	b = re.search(r"^odrelay_recipients_bounced_total (\d+)", t, re.M)
	out["bounced"] = int(b.group(1)) if b else 0
	return out
before = metrics()
s = smtplib.SMTP("127.0.0.1", port, timeout=30)
s.ehlo("client.test")
s.mail("bench@client.test")
s.rcpt("u@short.test")
code, resp = s.data(b"Subject: due\r\n\r\nthe one due\r\n")
s.quit()
qid = re.search(rb"[0-9A-F]{16}", resp)
# due at its id's second (made at commit) plus the lifetime
due = (int(qid.group(0)[:8], 16) if qid else int(time.time())) + life
deadline = time.time() + life + 600
while time.time() < deadline:
	m = metrics()
	if m["bounced"] > before["bounced"]:
		print("due-to-dsn %.2f s; read queue=%d domain=%d (before the send: queue=%d domain=%d)"
		    % (time.time() - due, m["queue"], m["domain"], before["queue"], before["domain"]))
		break
	time.sleep(0.05)
else:
	print("not returned within %d s" % (life + 600))
PY
sleep 1
kill "$noopid"; wait "$noopid" 2>/dev/null
echo "stall max/p99 ms, replies: $(head -1 "$dir/noop.out")"
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
