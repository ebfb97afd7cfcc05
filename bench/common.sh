# bench/common.sh - helpers sourced by the bench scripts (not run alone).
# Expects: $builddir set by the caller; sets odrelayd, source, sink, tmp.
# Every process started here is killed by PID in bench_cleanup.

bench_dir=$(cd "$(dirname "$0")" && pwd)
PATH=$PATH:/usr/sbin:/sbin
export PATH

find_tool() {
	for p in "$(command -v "$1" 2>/dev/null)" /usr/sbin/$1 /usr/lib/postfix/sbin/$1; do
		[ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return 0; }
	done
	return 1
}

bench_init() {
	odrelayd=$builddir/odrelayd
	[ -x "$odrelayd" ] || { echo "$odrelayd not built"; exit 1; }
	command -v python3 >/dev/null || { echo "python3 needed"; exit 1; }
	source=$(find_tool smtp-source) && sink=$(find_tool smtp-sink) || {
		echo "smtp-source/smtp-sink not found: they come with Postfix:"
		echo "  echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections"
		echo "  DEBIAN_FRONTEND=noninteractive apt-get install -y postfix"
		exit 1
	}
	# same disk as the Postfix instance of postfix-setup.sh
	tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/odrelay-bench.XXXXXX")
	chmod 755 "$tmp"
	bench_pids=""
	pf_started=0
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

bench_cleanup() {
	echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
	for p in $bench_pids; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	bench_pids=""
	[ "$pf_started" = 1 ] && sh "$bench_dir/postfix-setup.sh" teardown
	pf_started=0
	[ -n "${tmp:-}" ] && rm -rf "$tmp"
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
	i=0
	until python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null; do
		i=$((i + 1)); [ $i -gt 100 ] && return 1
		sleep 0.1
	done
}

now() { date +%s.%N; }

# median of the numbers on stdin
median() {
	sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# odrelayd_conf DIR PORT [extra lines...]: a demo-like configuration
# (contrib/demo.conf: log_level info, runs as root, held example.org).
odrelayd_conf() {
	d=$1; p=$2; shift 2
	mkdir -p "$d/queue"
	: >"$d/passwd"; chmod 600 "$d/passwd"
	{
		echo "hostname       = relay.bench.test"
		echo "queue_dir      = $d/queue"
		echo "smtp_listen    = 127.0.0.1:$p"
		echo "odmr_listen    ="
		echo "control_socket = $d/control.sock"
		echo "passwd_file    = $d/passwd"
		echo "log_level      = ${BENCH_LOG_LEVEL:-info}"
		echo "run_as_user    = $(id -un)"
		for l in "$@"; do echo "$l"; done
	} >"$d/odrelay.conf"
}

# odrelayd_start DIR PORT: runs odrelayd -f on DIR/odrelay.conf, sets odpid.
odrelayd_start() {
	"$odrelayd" -f -c "$1/odrelay.conf" 2>>"$1/odrelayd.log" &
	odpid=$!
	bench_pids="$bench_pids $odpid"
	wait_port "$2" || { echo "odrelayd did not start:"; tail "$1/odrelayd.log"; exit 1; }
}

# odrelayd_stop: TERM, wait, report a bad exit.
odrelayd_stop() {
	kill "$odpid" 2>/dev/null
	wait "$odpid"; st=$?
	bench_pids=$(echo "$bench_pids" | tr ' ' '\n' | grep -vx "$odpid" | tr '\n' ' ')
	[ $st -ne 0 ] && echo "# odrelayd exit status $st"
	odpid=""
}

# status_kb PID FIELD: VmRSS / VmHWM in kB
status_kb() {
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

machine_line() {
	echo "# $(uname -srm), $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GB RAM", $2 / 1048576 }' /proc/meminfo)"
	echo "# disk under $tmp: $(df -T "$tmp" | awk 'NR==2 {print $2 " on " $1}')"
	echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share the CPUs: see RESULTS.md)"
	echo "# odrelayd $("$odrelayd" -V 2>/dev/null | awk '{print $2}') ($builddir), postfix $(postconf -d -h mail_version 2>/dev/null)"
}

# od_queued DIR: messages in odrelayd's queue (odrelayctl stats)
od_queued() {
	"$builddir/odrelayctl" -c "$1/odrelay.conf" stats 2>/dev/null | awk '/^messages:/ { print $2 }'
}
