#!/bin/sh
# bench/push.sh - push delivery (issue 12):
#  1. BENCH_MESSAGES (1,000) messages sent one by one to a held domain whose
#     office runs `odpull --watch`: latency from the provider's 250 to the
#     end of DATA at the office's MTA (a recording python SMTP server),
#     p50/p99 (goal: p99 < 500 ms on loopback);
#  2. the same with fetchmail polling every 60 s: BENCH_FM_MESSAGES (6)
#     messages sent 37 s apart (so they fall at different points of the
#     poll cycle), and the expected figures for uniform arrivals;
#  3. RSS of BENCH_WAITERS (10,000) ODMR sessions waiting in XWAIT from one
#     address (goal < 150 MB), the time a SIGHUP takes to confirm and keep
#     them all, and the time for one message to wake them;
#     plain ODMR, then with TLS from the first byte (odmrs_listen).
#
# usage: sh bench/push.sh [BUILDDIR]
# env:   BENCH_MESSAGES=1000 BENCH_FM_MESSAGES=6 BENCH_WAITERS=10000
#        BENCH_SKIP="" (words: latency fetchmail waiters tlswaiters)
#        BENCH_DIR=/var/tmp
set -u
builddir=$(cd "${1:-${top_builddir:-.}}" && pwd)
. "$(dirname "$0")/common.sh"
msgs=${BENCH_MESSAGES:-1000}
fmmsgs=${BENCH_FM_MESSAGES:-6}
waiters=${BENCH_WAITERS:-10000}
skip=${BENCH_SKIP:-}
ulimit -n $((waiters * 2 + 500)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

bench_init
machine_line
echo "# ulimit -n $(ulimit -n)"

# provider DIR: odrelayd with an ODMR listener and the ATRN user "office"
provider() {
	sp=$(free_port); op=$(free_port); odmrs_port=$(free_port)
	pdir=$1; shift
	rm -rf "$pdir"; mkdir -p "$pdir"
	tlsl=""
	case "$*" in *tls_cert_file*) tlsl="odmrs_listen = 127.0.0.1:$odmrs_port" ;; esac
	odrelayd_conf "$pdir" "$sp" \
	    "auth_requires_tls = no" "max_waiting = $((waiters + 100))" \
	    "max_waiting_per_user = $((waiters + 100))" \
	    "$tlsl" "$@" "" "[domain example.org]" "hold = yes"
	set -- "$pdir"
	sed -i "s/^odmr_listen .*/odmr_listen    = 127.0.0.1:$op/" "$1/odrelay.conf"
	echo office-secret | "$builddir/odrelayctl" -c "$1/odrelay.conf" passwd add office example.org >/dev/null
	odrelayd_start "$1" "$sp"
	smtp_port=$sp; odmr_port=$op
}

case " $skip " in *" latency "*) ;; *)
	provider "$tmp/lat"
	mta=$(free_port)
	ODPULL_PASSWORD=office-secret "$builddir/odpull" --watch --server "127.0.0.1:$odmr_port" \
	    --user office --tls none --deliver "127.0.0.1:$mta" >"$tmp/odpull.log" 2>&1 &
	wpid=$!
	bench_pids="$bench_pids $wpid"
	echo "# odpull --watch --server 127.0.0.1:$odmr_port --user office --tls none --deliver 127.0.0.1:$mta"
	echo "# python3 bench/pushclient.py latency $smtp_port $mta $msgs  (send one, wait for it at the MTA, next)"
	sleep 0.5
	python3 "$bench_dir/pushclient.py" latency "$smtp_port" "$mta" "$msgs" | sed 's/^/odpull --watch: /'
	kill "$wpid"; wait "$wpid"; echo "# odpull --watch exit status on SIGTERM: $?"
	echo "# odpull reconnections after a failure: $(grep -c 'trying again' "$tmp/odpull.log")"
	grep -v 'watching\|stopped\|delivered to' "$tmp/odpull.log" | sort | uniq -c | sort -rn | head -5 | sed 's/^/#   /'
	bench_pids=$(echo "$bench_pids" | tr ' ' '\n' | grep -vx "$wpid" | tr '\n' ' ')
	odrelayd_stop
;; esac

case " $skip " in *" fetchmail "*) ;; *)
	if command -v fetchmail >/dev/null; then
		provider "$tmp/fm"
		mta=$(free_port)
		mkdir -p "$tmp/fmhome"
		printf 'set daemon 60\npoll 127.0.0.1 via 127.0.0.1 protocol ODMR port %s user "office" password "office-secret" fetchdomains example.org smtphost 127.0.0.1/%s\n' \
		    "$odmr_port" "$mta" >"$tmp/fmhome/rc"
		chmod 600 "$tmp/fmhome/rc"
		FMRC=$tmp/fmhome/rc FMHOME=$tmp/fmhome FMPID=$tmp/fmhome/pid FMLOG=$tmp/fm.log \
		    python3 - "$smtp_port" "$mta" "$fmmsgs" "$bench_dir" <<'PY' &
import sys, time, subprocess, os
sys.path.insert(0, sys.argv[4])
import pushclient
smtp, mta, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sink = pushclient.Sink(mta)
with open(os.environ.get("FMLOG", "/dev/null"), "w") as log:
    p = subprocess.Popen(["fetchmail", "-f", os.environ["FMRC"], "--nosyslog",
        "--nodetach", "--pidfile", os.environ["FMPID"]], stdout=log,
        stderr=log, env=dict(os.environ, HOME=os.environ["FMHOME"],
        FETCHMAILHOME=os.environ["FMHOME"]))
time.sleep(2)
sent = {}
for i in range(n):
    tag = "fm%03d" % i
    sent[tag] = pushclient.smtp_send(smtp, tag)
    if i + 1 < n:
        time.sleep(37)
lat = []
for tag, t0 in sent.items():
    t1 = sink.wait(tag, 130)
    if t1 is not None:
        lat.append(t1 - t0)
p.terminate(); p.wait()
lat.sort()
print("fetchmail -d 60: messages %d, arrived %d, latencies %s s, median %.1f s"
    % (n, len(lat), " ".join("%.1f" % x for x in lat),
    lat[len(lat) // 2] if len(lat) % 2 else (lat[len(lat)//2-1] + lat[len(lat)//2]) / 2))
PY
		fpid=$!
		bench_pids="$bench_pids $fpid"
		echo "# fetchmail --nodetach with 'set daemon 60' (ODMR), $fmmsgs messages sent 37 s apart"
		wait "$fpid"
		bench_pids=$(echo "$bench_pids" | tr ' ' '\n' | grep -vx "$fpid" | tr '\n' ' ')
		odrelayd_stop
		echo "fetchmail, expected for arrivals uniform over the 60 s cycle: p50 30 s, p99 59.4 s (+ the pull itself)"
	else
		echo "# fetchmail not installed: skipped"
	fi
;; esac

# waiters NAME [extra config...]: RSS with $waiters sessions in XWAIT
waiters_run() {
	name=$1; shift
	provider "$tmp/wait" "$@"
	[ -n "${PUSH_TLS:-}" ] && odmr_port=$odmrs_port
	r0=$(status_kb "$odpid" VmRSS)
	: >"$tmp/flag"
	echo "# $name: python3 bench/pushclient.py wait $odmr_port $waiters office PASSWORD FLAG  (EHLO, AUTH CRAM-MD5, XWAIT; 10 logins at a time; max_connections_per_ip 20)"
	python3 "$bench_dir/pushclient.py" wait "$odmr_port" "$waiters" office office-secret "$tmp/flag" >"$tmp/wait.out" 2>&1 &
	cpid=$!
	bench_pids="$bench_pids $cpid"
	t0=$(now)
	until grep -q "ready\|error" "$tmp/wait.out" || ! kill -0 "$cpid" 2>/dev/null; do sleep 0.2; done
	t1=$(now)
	sleep 1
	r1=$(status_kb "$odpid" VmRSS)
	h1=$(status_kb "$odpid" VmHWM)
	nfd=$(ls "/proc/$odpid/fd" | wc -l)
	echo "# $(cat "$tmp/wait.out" | tr '\n' ' ')logins took $(echo "$t1 - $t0" | bc) s; fds $nfd"
	awk -v a="$r0" -v b="$r1" -v h="$h1" -v n="$waiters" -v name="$name" 'BEGIN { printf "%s: %d waiting sessions: VmRSS %d kB before, %d kB with them (%.1f MB, HWM %.1f MB), %.2f kB per session (goal < 150 MB: %s)\n", name, n, a, b, b / 1024, h / 1024, (b - a) / n, b < 153600 ? "met" : "NOT met" }'
	# A reload with every one waiting: each user is asked about again
	# (the auth process, 64 at a time) and kept; the wake-up below then
	# shows they all still wait.
	t0=$(now)
	kill -HUP "$odpid"
	kept=0
	for _ in $(seq 600); do
		kept=$(python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"stats\n")
d = b""
while not d.endswith(b"\n"):
    c = s.recv(65536)
    if not c:
        break
    d += c
for w in d.decode().split():
    if w.startswith("odrelay_odmr_reload_sessions_total{result=\"kept\"}="):
        print(w.rsplit("=", 1)[1])' "$tmp/wait/control.sock" 2>/dev/null)
		[ "${kept:-0}" -ge "$waiters" ] && break
		sleep 0.05
	done
	t1=$(now)
	echo "$name: SIGHUP with $waiters waiting: ${kept:-0} kept in $(echo "$t1 - $t0" | bc) s (the control socket's stats, polled every 50 ms)"
	rm -f "$tmp/flag"
	python3 "$bench_dir/pushclient.py" send "$smtp_port" wake >/dev/null
	wait "$cpid"
	tail -1 "$tmp/wait.out"
	bench_pids=$(echo "$bench_pids" | tr ' ' '\n' | grep -vx "$cpid" | tr '\n' ' ')
	odrelayd_stop
}

case " $skip " in *" waiters "*) ;; *)
	waiters_run plain
;; esac

case " $skip " in *" tlswaiters "*) ;; *)
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -subj /CN=relay.bench.test \
	    -days 2 >/dev/null 2>&1
	PUSH_TLS=1; export PUSH_TLS
	waiters_run odmrs "tls_cert_file = $tmp/cert.pem" "tls_key_file = $tmp/key.pem"
	unset PUSH_TLS
;; esac
