#!/bin/sh
# The folder layers of ARCHITECTURE.md: a source file includes headers of
# its own folder or of a lower layer only.
#   common 0 < queue, dns 1 < relay 2 < pull 3 < daemon 4
# (queue and dns do not include each other). Headers are included by bare
# name, so each quoted include is looked up among the folders' headers.
# queue/ is a library: it returns errors and reports, never logs (only the
# admin tool odrelayctl*.c there may).
# Run by `make check` (top_srcdir in the environment); exit 0 or 1.
: "${top_srcdir:=$(cd "$(dirname "$0")/.." && pwd)}"
cd "$top_srcdir" || exit 1
folders="common queue dns relay pull daemon"
rank() {
	case $1 in
	common) echo 0 ;; queue|dns) echo 1 ;; relay) echo 2 ;; pull) echo 3 ;;
	daemon) echo 4 ;; *) echo 9 ;;
	esac
}
map=$(mktemp) || exit 1
trap 'rm -f "$map"' EXIT INT TERM
for d in $folders; do
	for h in "$d"/*.h; do
		[ -f "$h" ] && echo "${h#*/} $d"
	done
done >"$map"
bad=0
for d in $folders; do
	for f in "$d"/*.c "$d"/*.h; do
		[ -f "$f" ] || continue
		for h in $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f"); do
			hd=$(awk -v h="${h##*/}" '$1 == h { print $2; exit }' "$map")
			[ -n "$hd" ] && [ "$hd" != "$d" ] || continue
			if [ "$(rank "$hd")" -ge "$(rank "$d")" ]; then
				echo "$f includes $h ($hd/ is not below $d/)"
				bad=1
			fi
		done
	done
done
for f in queue/*.c queue/*.h; do
	case ${f##*/} in odrelayctl*) continue ;; esac
	if grep -q '^#include "log\.h"' "$f"; then
		echo "$f includes log.h (queue/ returns errors, never logs)"
		bad=1
	fi
done
[ $bad = 0 ] && echo "layers: no include goes up or sideways, queue/ does not log"
exit $bad
