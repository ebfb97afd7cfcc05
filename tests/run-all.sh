#!/bin/sh
# The whole test suite, as CI runs it: install dependencies, build with
# -Werror, run every unit and integration test, then again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then make distcheck.
# Builds out of tree in ./build-ci and ./build-san.
set -e
cd "$(dirname "$0")/.."
top=$(pwd)
sh contrib/install-deps.sh
autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
jobs=$(nproc)

run_check() {
	dir=$1; shift
	rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
	"$top/configure" -q --enable-werror "$@"
	make -j"$jobs" -s
	if ! make -j"$jobs" check; then
		for f in $(find . -name '*.log' -path '*tests*'); do
			grep -q -E '^(FAIL|ERROR)' "${f%.log}.trs" 2>/dev/null && { echo "=== $f"; tail -n 80 "$f"; }
		done
		exit 1
	fi
	cd "$top"
}

echo "== build and test (-Wall -Wextra -Werror)"
run_check "$top/build-ci"
echo "== build and test under ASan + UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	run_check "$top/build-san" --enable-sanitizers
echo "== make distcheck"
cd "$top/build-ci" && make -s distcheck DISTCHECK_CONFIGURE_FLAGS=--enable-werror >/dev/null
echo "all tests passed"
