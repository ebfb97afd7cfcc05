#!/bin/sh
# run-fuzz.sh [SECONDS [TARGET...]] - build the libFuzzer targets and run
# each for SECONDS (default 30) on a copy of its seed corpus.
#
# Exit 0 when every target ran clean; 1 on any crash, leak, sanitizer
# report, timeout or build failure (the reproducer is kept in the artifact
# directory, printed at the end). Environment:
#   CLANG           compiler for the fuzz build [clang]
#   FUZZ_BUILD_DIR  reuse this build directory [a fresh temporary one]
#   FUZZ_ARTIFACTS  where crash/leak/timeout inputs go [$FUZZ_BUILD_DIR/fuzz-artifacts]
#   FUZZ_TIMEOUT    per-input timeout in seconds [25]
#   FUZZ_KEEP_CORPUS=1  keep the grown corpora (printed) instead of deleting them
set -u

secs=${1:-30}
[ $# -gt 0 ] && shift
case $secs in
''|*[!0-9]*) echo "usage: $0 [SECONDS [TARGET...]]" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
targets=${*:-"smtp_parse smtpd sasl sasl_client config passwd mx queue_record milter authproto recip tlspolicy cmdtable lineio smtpc"}
clang=${CLANG:-clang}
timeout=${FUZZ_TIMEOUT:-25}

command -v "$clang" >/dev/null 2>&1 || {
	echo "run-fuzz: $clang not found (Debian: apt-get install clang)" >&2
	exit 1
}

# RAM is faster for the targets' temporary files, and all goes at exit
tmpbase=${TMPDIR:-/tmp}
[ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] && tmpbase=/dev/shm
tmp=$(mktemp -d "$tmpbase/odrelay-runfuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM HUP

build=${FUZZ_BUILD_DIR:-$tmp/build}
art=${FUZZ_ARTIFACTS:-$build/fuzz-artifacts}
mkdir -p "$build" "$art" || exit 1
art=$(cd "$art" && pwd)

echo "run-fuzz: building in $build"
(
	set -e
	cd "$top"
	test -f configure || autoreconf -fi
	cd "$build"
	test -f Makefile || "$top/configure" -q
	make fuzz FUZZ_CC="$clang"
) >"$tmp/build.log" 2>&1 || {
	tail -n 40 "$tmp/build.log"
	echo "run-fuzz: FAIL: build" >&2
	exit 1
}

# A sanitizer report must end the run with an error, never scroll past.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=0}
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS UBSAN_OPTIONS

failed=
for t in $targets; do
	bin=$build/fuzz-bin/fuzz_$t
	if [ ! -x "$bin" ]; then
		echo "run-fuzz: $t: no such target" >&2
		failed="$failed $t"
		continue
	fi
	corpus=$tmp/corpus-$t
	mkdir -p "$corpus"
	nseed=0
	if [ -d "$here/corpus/$t" ]; then
		cp "$here/corpus/$t"/* "$corpus"/ 2>/dev/null
		nseed=$(ls "$corpus" | wc -l)
	fi
	log=$tmp/$t.log
	# TMPDIR: whatever a crashed target leaves goes with $tmp
	TMPDIR=$tmp "$bin" -max_total_time="$secs" -timeout="$timeout" \
	    -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix="$art/$t-" "$corpus" </dev/null >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
	nfin=$(ls "$corpus" | wc -l)
	if [ $rc -ne 0 ] || grep -q -e '^==[0-9]*== *ERROR' \
	    -e 'runtime error:' -e '^SUMMARY: ' "$log"; then
		echo "run-fuzz: $t: FAIL (exit $rc) after ${runs:-?} runs"
		grep -n -m 1 -e 'ERROR' -e 'runtime error:' "$log"
		sed -n '/^==[0-9]*== *ERROR/,/^SUMMARY/p;/runtime error:/,/^SUMMARY/p' \
		    "$log" | grep -v -e 'in fuzzer::' -e '__libc_start' -e 'in _start' \
		    -e 'in main ' | head -n 40
		grep -e 'Test unit written to' "$log"
		failed="$failed $t"
		cp "$log" "$art/$t.log"
	else
		echo "run-fuzz: $t: ok: runs=${runs:-?} execs/s=${rate:-?}" \
		    "time=${took:-?}s corpus=$nseed->$nfin"
	fi
	if [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ]; then
		mkdir -p "$art/corpus-$t" && cp "$corpus"/* "$art/corpus-$t"/
	fi
done

if [ -n "$failed" ]; then
	echo "run-fuzz: FAILED:$failed (inputs and logs in $art)"
	# keep the build directory with the artifacts when it is ours
	[ -z "${FUZZ_BUILD_DIR:-}" ] && [ -z "${FUZZ_ARTIFACTS:-}" ] && {
		mkdir -p "${TMPDIR:-/tmp}/odrelay-fuzz-artifacts" &&
		cp "$art"/* "${TMPDIR:-/tmp}/odrelay-fuzz-artifacts"/ 2>/dev/null
		echo "run-fuzz: copied to ${TMPDIR:-/tmp}/odrelay-fuzz-artifacts"
	}
	exit 1
fi
echo "run-fuzz: all targets clean"
exit 0
