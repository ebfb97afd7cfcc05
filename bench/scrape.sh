#!/bin/sh
# scrape.sh [BUILDDIR]: what the per-domain operator facts cost (issue 18):
# median time of one /metrics scrape and of `odrelayctl stats` with
# BENCH_DOMAINS configured domains (10000), mail held for BENCH_HELD of
# them (1000, one message each; some pulled state recorded by ETRN).
# Medians of BENCH_RUNS (11). Needs python3 only; starts odrelayd on
# loopback and kills it by PID.
set -e
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
domains=${BENCH_DOMAINS:-10000}
held=${BENCH_HELD:-1000}
runs=${BENCH_RUNS:-11}
tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/odrelay-scrape.XXXXXX")
chmod 755 "$tmp"
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp=$(port); metrics=$(port)
{
	echo "hostname = relay.bench.test"
	echo "queue_dir = $tmp/queue"
	echo "smtp_listen = 127.0.0.1:$smtp"
	echo "odmr_listen ="
	echo "control_socket = $tmp/control.sock"
	echo "metrics_listen = $metrics"
	echo "log_level = warning"
	echo "etrn_rate = 1000000"
	[ "$(id -u)" = 0 ] && echo "run_as_user = root"
	i=0
	while [ $i -lt "$domains" ]; do
		printf '[domain d%d.bench.test]\nhold = yes\n' $i
		i=$((i + 1))
	done
} >"$tmp/odrelay.conf"
"$builddir/odrelayd" -f -c "$tmp/odrelay.conf" 2>"$tmp/log" &
pid=$!
BENCH_SMTP=$smtp BENCH_METRICS=$metrics BENCH_HELD=$held BENCH_RUNS=$runs \
BENCH_CTL="$builddir/odrelayctl" BENCH_CONF="$tmp/odrelay.conf" python3 - <<'PY'
import os, socket, statistics, subprocess, time, urllib.request
smtp, metrics = int(os.environ["BENCH_SMTP"]), int(os.environ["BENCH_METRICS"])
held, runs = int(os.environ["BENCH_HELD"]), int(os.environ["BENCH_RUNS"])
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", smtp), 1).close(); break
    except OSError:
        time.sleep(0.1)
def cmd(f, line):
    f.write(line + b"\r\n"); f.flush()
    while True:
        r = f.readline()
        if r[3:4] != b"-":
            return r
s = socket.create_connection(("127.0.0.1", smtp)); f = s.makefile("rwb")
f.readline(); cmd(f, b"EHLO bench.test")
for i in range(held):
    cmd(f, b"MAIL FROM:<s@sender.test>")
    cmd(f, b"RCPT TO:<u@d%d.bench.test>" % i)
    cmd(f, b"DATA"); r = cmd(f, b"Subject: x\r\n\r\nx\r\n.")
    assert r.startswith(b"250"), r
for i in range(0, held, 10):	# some domains with an ETRN recorded
    cmd(f, b"ETRN d%d.bench.test" % (held + i))
cmd(f, b"QUIT"); s.close()
time.sleep(1)
def scrape():
    t = time.perf_counter()
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics, timeout=60) as r:
        body = r.read()
    return time.perf_counter() - t, len(body)
def stats():
    t = time.perf_counter()
    subprocess.run([os.environ["BENCH_CTL"], "-c", os.environ["BENCH_CONF"], "stats"],
        stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t
sc = [scrape() for _ in range(runs)]
st = [stats() for _ in range(runs)]
print("domains %s, held %d" % (os.environ.get("BENCH_DOMAINS", "10000"), held))
print("/metrics scrape: median %.1f ms, %d bytes (runs: %s)" % (
    statistics.median(x for x, _ in sc) * 1000, sc[0][1],
    " ".join("%.1f" % (x * 1000) for x, _ in sc)))
print("odrelayctl stats: median %.1f ms (runs: %s)" % (
    statistics.median(st) * 1000, " ".join("%.1f" % (x * 1000) for x in st)))
PY
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
