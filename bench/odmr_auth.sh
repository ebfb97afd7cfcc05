#!/bin/sh
# odmr_auth.sh [BUILDDIR...] - ODMR sessions per second: connect, EHLO,
# AUTH CRAM-MD5, ATRN (no mail: 453), QUIT, by BENCH_CONC (4) clients at
# once, BENCH_SESSIONS (2000) sessions a run, BENCH_RUNS (5) runs; prints
# the median per build directory. Several build directories are measured
# in turn, run by run (before/after comparisons on a shared machine).
# Runs as root: run_as_user nobody, as in production.
set -u
BENCH_CONC=${BENCH_CONC:-4}
BENCH_SESSIONS=${BENCH_SESSIONS:-2000}
BENCH_RUNS=${BENCH_RUNS:-5}
[ $# -eq 0 ] && set -- "${top_builddir:-.}"

builddir=$1
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/odrelay-bench.XXXXXX")
chmod 755 "$tmp"
bench_pids=""
pf_started=0
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

cat >"$tmp/client.py" <<'EOF'
import base64, hashlib, hmac, socket, sys, threading, time

port, conc, total = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
left = [total]
lock = threading.Lock()
bad = []

def reply(f):
	while True:
		line = f.readline()
		if not line:
			raise EOFError("closed")
		if line[3:4] != b"-":
			return line

def session():
	s = socket.create_connection(("127.0.0.1", port))
	f = s.makefile("rb")
	reply(f)
	s.sendall(b"EHLO bench.test\r\n"); reply(f)
	s.sendall(b"AUTH CRAM-MD5\r\n")
	chal = base64.b64decode(reply(f)[4:].strip())
	dig = hmac.new(b"bench-pw", chal, hashlib.md5).hexdigest()
	s.sendall(base64.b64encode(b"bench " + dig.encode()) + b"\r\n")
	r = reply(f)
	if not r.startswith(b"235"):
		bad.append(r)
	s.sendall(b"ATRN example.org\r\n")
	r = reply(f)
	if not r.startswith(b"453"):
		bad.append(r)
	s.sendall(b"QUIT\r\n"); reply(f)
	f.close(); s.close()

def worker():
	while True:
		with lock:
			if left[0] == 0:
				return
			left[0] -= 1
		session()

t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(conc)]
for t in ts: t.start()
for t in ts: t.join()
el = time.time() - t0
if bad:
	print("unexpected replies: %r" % bad[:3], file=sys.stderr)
	sys.exit(1)
print("%.1f" % (total / el))
EOF

# utime+stime (clock ticks) of a process and all its descendants.
cpu_ticks() {
	python3 - "$1" <<'EOP'
import os, sys
root = int(sys.argv[1])
procs = {}
for e in os.listdir("/proc"):
	if e.isdigit():
		try:
			st = open("/proc/%s/stat" % e).read()
		except OSError:
			continue
		f = st[st.rindex(")") + 2:].split()
		procs[int(e)] = (int(f[1]), int(f[11]) + int(f[12]))
tot, todo = 0, [root]
while todo:
	p = todo.pop()
	tot += procs.get(p, (0, 0))[1]
	todo += [c for c, (pp, _) in procs.items() if pp == p]
print(tot)
EOP
}

# One configured daemon per build directory, started for each run.
k=0
for b in "$@"; do
	k=$((k + 1))
	d=$tmp/d$k
	port=$(free_port)
	mkdir -p "$d" && chown nobody "$d"
	cat >"$d/odrelay.conf" <<EOC
hostname = relay.bench.test
queue_dir = $d/queue
smtp_listen = 127.0.0.1:$(free_port)
odmr_listen = 127.0.0.1:$port
control_socket = $d/control.sock
passwd_file = $d/passwd
log_level = warning
run_as_user = nobody
atrn_rate = 1000000
dns_servers = 127.0.0.1:$(free_port)

[domain example.org]
hold = yes
EOC
	echo "bench-pw" | "$b/odrelayctl" -c "$d/odrelay.conf" passwd add \
	    bench example.org >/dev/null || exit 1
	echo "$port" >"$d/port"
done

run=0
while [ $run -lt "$BENCH_RUNS" ]; do
	run=$((run + 1))
	k=0
	for b in "$@"; do
		k=$((k + 1))
		d=$tmp/d$k
		port=$(cat "$d/port")
		odrelayd=$b/odrelayd
		odrelayd_start "$d" "$port"
		c0=$(cpu_ticks "$odpid")
		r=$(python3 "$tmp/client.py" "$port" "$BENCH_CONC" \
		    "$BENCH_SESSIONS") || { tail "$d/odrelayd.log"; exit 1; }
		c1=$(cpu_ticks "$odpid")
		odrelayd_stop
		# CPU time of odrelayd and its helper processes per session:
		# steadier than the rate on a shared machine.
		us=$(awk -v a="$c0" -v b="$c1" -v n="$BENCH_SESSIONS" \
		    -v hz="$(getconf CLK_TCK)" \
		    'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
		echo "$r" >>"$d/results"
		echo "$us" >>"$d/cpu"
		echo "# run $run $b: $r sessions/s, $us us CPU/session"
	done
done
k=0
for b in "$@"; do
	k=$((k + 1))
	echo "$b: median $(median <"$tmp/d$k/results") sessions/s" \
	    "(runs: $(tr '\n' ' ' <"$tmp/d$k/results")), median" \
	    "$(median <"$tmp/d$k/cpu") us CPU/session" \
	    "(runs: $(tr '\n' ' ' <"$tmp/d$k/cpu"))"
done
