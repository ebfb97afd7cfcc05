#!/bin/sh
# Integration tests: the real odrelayd on loopback ports with real clients
# (python smtplib/sockets, swaks, openssl s_client). Run by `make check`
# with top_srcdir and top_builddir in the environment; by hand:
#   top_builddir=/path/to/build sh tests/integration/run-integration.sh [NAME...]
# Exit 0 all passed, 1 any failed, 77 (skip) when odrelayd is not built.
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
top_srcdir=$(cd "$top_srcdir" && pwd)
top_builddir=$(cd "$top_builddir" && pwd)
export top_srcdir top_builddir
# No __pycache__ in the source tree (it is distributed as a directory).
PYTHONDONTWRITEBYTECODE=1
export PYTHONDONTWRITEBYTECODE
here=$top_srcdir/tests/integration

# make distcheck in CI: the suite already ran twice on the same sources.
if [ -n "${ODRELAY_SKIP_INTEGRATION:-}" ]; then
	echo "SKIP: ODRELAY_SKIP_INTEGRATION is set"
	exit 77
fi
if [ ! -x "$top_builddir/odrelayd" ]; then
	echo "SKIP: $top_builddir/odrelayd not built"
	exit 77
fi
for tool in python3 openssl swaks; do
	if ! command -v $tool >/dev/null 2>&1; then
		echo "FAIL: $tool not found (sh contrib/install-deps.sh)"
		exit 1
	fi
done
[ -x "$top_builddir/odrelayctl" ] || { echo "FAIL: odrelayctl not built"; exit 1; }

tests=${*:-cli hold policy protocol tls tlspolicy dane mtasts odpulltls ipv6 crash release odmr odpull operate faults abuse regress dnsbl auth push xreload ops learn hostile_a hostile_b milter watch prometheus filters scale nopause verify review review2 review3 review4}
# Each script is bounded; together they stay well under 3 minutes.
limit=${INTEGRATION_TIMEOUT:-90}
start=$(date +%s)
failed=""
for t in $tests; do
	echo "=== $t"
	timeout -k 5 "$limit" python3 -u "$here/test_$t.py"
	rc=$?
	case $rc in
	0) ;;
	77) echo "=== $t skipped" ;;
	124|137) echo "=== $t: timed out after ${limit}s"; failed="$failed $t" ;;
	*) failed="$failed $t" ;;
	esac
done
echo "integration: $(( $(date +%s) - start ))s"
if [ -n "$failed" ]; then
	echo "FAILED:$failed"
	exit 1
fi
exit 0
