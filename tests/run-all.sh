#!/bin/sh
# The whole test suite, as CI runs it: install dependencies, build with
# -Werror, run every unit and integration test, then again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then make distcheck, part
# of the integration suite under valgrind, and each fuzz target for a
# bounded time. Builds out of tree in ./build-ci, ./build-san, ./build-fuzz.
set -e
cd "$(dirname "$0")/.."
top=$(pwd)
sh contrib/install-deps.sh
# An in-tree build would make the out-of-tree configures below refuse.
[ -f config.status ] && { echo "removing the in-tree build (make distclean)"; make -s distclean; }
autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
jobs=$(nproc)
# Tests keep their temporary files here, away from other users of /tmp.
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/odrelay-ci.XXXXXX")
export TMPDIR
chmod 755 "$TMPDIR"	# the daemon under test runs as nobody when we are root
# Kept when anything failed: the failing tests name their directories in it.
trap 'rc=$?; if [ $rc -eq 0 ]; then rm -rf "$TMPDIR"; else echo "== failed (exit $rc); test directories kept in $TMPDIR"; fi' EXIT
t0=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - t0 ))s)"; }

# automake's .trs files say ":test-result: FAIL" (or ERROR) for each
# failing test; print the end of that test's log (enough for the daemon
# log tail and the "kept DIR" line).
show_failures() {
	find . -name '*.trs' | sort | while read -r trs; do
		grep -q -E '^:test-result: (FAIL|ERROR|XPASS)' "$trs" || continue
		log=${trs%.trs}.log
		failed=$(sed -n 's/^FAILED://p' "$log" | tail -n 1)
		if [ -n "$failed" ]; then
			# run-integration.sh: only the failing scripts' sections
			# ("=== NAME" up to the next one), each bounded.
			for t in $failed; do
				echo "=== $log: $t (failed)"
				awk -v t="$t" '/^=== / { on = ($2 == t) } on' "$log" |
				    tail -n "${FAIL_LINES:-300}"
			done
		else
			echo "=== $log (failed)"
			tail -n "${FAIL_LINES:-300}" "$log"
		fi
	done
}

run_check() {
	dir=$1; shift
	rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
	"$top/configure" -q --enable-werror "$@"
	make -j"$jobs" -s
	if ! make -j"$jobs" check; then
		show_failures
		exit 1
	fi
	cd "$top"
}

step "build and test (-Wall -Wextra -Werror)"
run_check "$top/build-ci"
step "build and test under ASan + UBSan"
# (test_install.sh builds the tree once more without sanitizers: skipped.)
ODRELAY_SKIP_INSTALL=1 \
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	run_check "$top/build-san" --enable-sanitizers
step "make distcheck (unit tests; the integration suite ran above)"
cd "$top/build-ci" && ODRELAY_SKIP_INTEGRATION=1 make -s distcheck \
	DISTCHECK_CONFIGURE_FLAGS=--enable-werror >/dev/null
step "integration tests with odrelayd under valgrind memcheck"
cd "$top/build-ci" && make -s check-valgrind \
	VALGRIND_TESTS="${VALGRIND_TESTS:-cli hold policy protocol release odmr faults}"
# CI stays under 30 minutes: the targets share about four minutes (12
# targets: 20 s each); FUZZ_SECONDS sets the time of each.
fuzz_targets=$(sed -n 's/^targets=${\*:-"\(.*\)"}$/\1/p' \
	"$top/tests/fuzz/run-fuzz.sh" | wc -w)
[ "${fuzz_targets:-0}" -gt 0 ] || fuzz_targets=12
fuzz_secs=${FUZZ_SECONDS:-$(( 240 / fuzz_targets > 10 ? 240 / fuzz_targets : 10 ))}
step "fuzz targets ($fuzz_secs s each, $fuzz_targets targets)"
cd "$top" && sh tests/fuzz/run-fuzz.sh "$fuzz_secs"
step "all tests passed"
