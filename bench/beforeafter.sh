#!/bin/sh
# bench/beforeafter.sh - the same odrelayd figures for two builds in one
# run, alternating so that both see the same machine load: inbound
# acceptance at 1, 10 and 50 sessions (accept.sh) and the ETRN flush of
# BENCH_N held messages (etrn.sh), odrelayd only. Each round runs every
# figure once for BEFORE, then once for AFTER; the medians over the rounds
# are printed. Prints figures only.
#
# usage: sh bench/beforeafter.sh BEFORE_BUILDDIR AFTER_BUILDDIR
# env:   BENCH_ROUNDS=3  BENCH_N=10000 (etrn.sh)  and accept.sh's knobs
set -u
[ $# -eq 2 ] || { echo "usage: sh bench/beforeafter.sh BEFORE_BUILDDIR AFTER_BUILDDIR" >&2; exit 2; }
before=$(cd "$1" && pwd) || exit 2
after=$(cd "$2" && pwd) || exit 2
here=$(cd "$(dirname "$0")" && pwd)
rounds=${BENCH_ROUNDS:-3}
out=$(mktemp -d /tmp/odrelay-beforeafter.XXXXXX) || exit 1
trap 'rm -rf "$out"' EXIT INT TERM

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# before: $before"
echo "# after:  $after"
r=1
while [ "$r" -le "$rounds" ]; do
	for which in before after; do
		eval dir=\$$which
		BENCH_SERVERS=odrelayd BENCH_RUNS=1 sh "$here/accept.sh" "$dir" 2>/dev/null |
		    awk -v w="$which" '$1 == "odrelayd" { print w, "accept" $2, $6 }' >>"$out/figs"
		BENCH_SERVERS=odrelayd BENCH_RUNS=1 sh "$here/etrn.sh" "$dir" 2>/dev/null |
		    awk -v w="$which" '/median flush/ { print w, "etrn", $(NF-1) }' >>"$out/figs"
	done
	r=$((r + 1))
done
sed 's/^/# run: /' "$out/figs"
echo "# load at the end $(cut -d' ' -f1-3 /proc/loadavg); $rounds rounds"
printf '%-10s %12s %12s %8s  %s\n' figure before after change "runs before | after"
for f in accept1 accept10 accept50 etrn; do
	b=$(awk -v f="$f" '$1 == "before" && $2 == f { print $3 }' "$out/figs" | sort -n)
	a=$(awk -v f="$f" '$1 == "after" && $2 == f { print $3 }' "$out/figs" | sort -n)
	mb=$(echo "$b" | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
	ma=$(echo "$a" | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
	awk -v f="$f" -v b="$mb" -v a="$ma" -v rb="$(echo $b)" -v ra="$(echo $a)" 'BEGIN {
		printf "%-10s %12.1f %12.1f %+7.1f%%  %s | %s\n", f " msg/s", b, a, (b > 0 ? (a - b) * 100 / b : 0), rb, ra }'
done
