#!/bin/sh
# Installation: configure --prefix=/usr --sysconfdir=/etc --localstatedir=/var
# in a temporary build, `make install DESTDIR=...`, then check that every
# file is where README.md and the manual pages say, that the systemd unit
# is fully substituted and accepted by systemd-analyze, that the manual
# pages render, and that `make uninstall` removes the files again.
# Run by `make check` with top_srcdir and top_builddir in the environment;
# by hand: top_builddir=BUILD sh tests/integration/test_install.sh
# Exit 0 all passed, 1 any failed, 77 skipped. The temporary directory is
# removed; ODRELAY_KEEP=1 keeps it when a check failed.
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
top_srcdir=$(cd "$top_srcdir" && pwd)
top_builddir=$(cd "$top_builddir" && pwd)
MAKE=${MAKE:-make}
# Not the calling make's flags: this is a separate build.
unset MAKEFLAGS MFLAGS MAKELEVEL DESTDIR

# A whole extra build: once per CI run is enough (not again under the
# sanitizers, nor inside make distcheck, whose install is checked there).
if [ -n "${ODRELAY_SKIP_INTEGRATION:-}${ODRELAY_SKIP_INSTALL:-}" ]; then
	echo "SKIP: ODRELAY_SKIP_INTEGRATION or ODRELAY_SKIP_INSTALL is set"
	exit 77
fi
if [ ! -x "$top_srcdir/configure" ]; then
	echo "SKIP: $top_srcdir/configure missing (autoreconf -fi)"
	exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/odrelay-install.XXXXXX") || exit 1
keep=
cleanup() {
	if [ -n "$keep" ]; then
		echo "kept $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "PASS install.$1"; }
bad() { failed=$((failed + 1)); keep=${ODRELAY_KEEP:+1}; echo "FAIL install.$1: $2"; }
skip() { echo "SKIP install.$1: $2"; }
finish() {
	echo "install: $passed passed, $failed failed"
	[ "$failed" -eq 0 ] && exit 0
	exit 1
}

root=$tmp/root
build=$tmp/build
src=$top_srcdir
mkdir -p "$build" "$root"

# A source tree configured in place cannot take a second, out-of-tree
# build: build from a cleaned copy instead.
if [ -f "$top_srcdir/config.status" ]; then
	src=$tmp/src
	cp -a "$top_srcdir" "$src" &&
	    (cd "$src" && $MAKE -s distclean >/dev/null 2>&1; rm -f config.status)
fi

log=$tmp/build.log
if ! (cd "$build" && "$src/configure" -q --prefix=/usr --sysconfdir=/etc \
    --localstatedir=/var --with-systemdsystemunitdir=/lib/systemd/system) \
    >"$log" 2>&1; then
	bad configure "configure failed:"
	tail -30 "$log"
	finish
fi
ok configure
if ! (cd "$build" && $MAKE -j2 >>"$log" 2>&1); then
	bad build "make failed:"
	grep -E "error|Error" "$log" | head -20
	finish
fi
ok build
if ! (cd "$build" && $MAKE install DESTDIR="$root" >"$tmp/install.log" 2>&1); then
	bad make-install "make install DESTDIR failed:"
	tail -30 "$tmp/install.log"
	finish
fi
ok make-install

# --- every file where the documentation says -----------------------------
missing=
for f in usr/sbin/odrelayd usr/sbin/odrelayctl usr/bin/odpull; do
	[ -f "$root/$f" ] && [ -x "$root/$f" ] || missing="$missing /$f"
done
[ -z "$missing" ] && ok programs || bad programs "not installed or not executable:$missing"

missing=
for f in man8/odrelayd.8 man8/odrelayctl.8 man5/odrelay.conf.5 man1/odpull.1; do
	[ -f "$root/usr/share/man/$f" ] || missing="$missing /usr/share/man/$f"
done
[ -z "$missing" ] && ok man-pages || bad man-pages "missing:$missing"

ex=$root/etc/odrelay/odrelay.conf.example
if [ -f "$ex" ] && cmp -s "$ex" "$top_srcdir/contrib/odrelay.conf.example"; then
	ok example-config
else
	bad example-config "/etc/odrelay/odrelay.conf.example missing or not contrib/odrelay.conf.example"
fi
# make install must not put a live configuration (or passwd) in place.
extra=$(cd "$root" && find etc -type f ! -name odrelay.conf.example)
[ -z "$extra" ] && ok no-live-config || bad no-live-config "unexpected files: $extra"

unit=$root/lib/systemd/system/odrelayd.service
if [ -f "$unit" ]; then
	ok unit-installed
else
	bad unit-installed "no odrelayd.service in --with-systemdsystemunitdir=/lib/systemd/system:"
	(cd "$root" && find . -name '*.service')
fi

# Another sysconfdir shows in the pages (they are made, not copied).
rm -f "$build/odrelayd.8"
if (cd "$build" && $MAKE -s odrelayd.8 sysconfdir=/opt/odtest/etc) >/dev/null 2>&1 &&
    grep -q '/opt/odtest/etc/odrelay/odrelay.conf' "$build/odrelayd.8" &&
    ! grep -v '/opt/odtest/etc/odrelay/' "$build/odrelayd.8" | grep -q '/etc/odrelay/'; then
	ok man-sysconfdir
else
	bad man-sysconfdir "odrelayd.8 made with sysconfdir=/opt/odtest/etc does not name it"
fi

# No spool directory from make install (the queue is /var/spool/odrelay,
# made by tmpfiles.d or the package); the tmpfiles entry names it 0700.
if [ -e "$root/var/spool/odrelay" ]; then
	bad no-spool-dir "make install created /var/spool/odrelay"
elif grep -q '^d /var/spool/odrelay 0700 odrelay odrelay' \
    "$root/usr/lib/tmpfiles.d/odrelay.conf" 2>/dev/null; then
	ok no-spool-dir
else
	bad no-spool-dir "no tmpfiles.d entry for /var/spool/odrelay 0700"
fi

# Paths substituted at build time: the manual pages and odpull's examples
# name the configured directories (here /etc and /usr/bin).
left=$(grep -l '@[a-z]*dir@' "$root"/usr/share/man/man*/* \
    "$root"/usr/share/doc/odrelay/examples/* 2>/dev/null)
if [ -n "$left" ]; then
	bad paths-substituted "unsubstituted: $left"
elif grep -q '^ExecStart=/usr/bin/odpull -c /etc/odpull.conf' \
    "$root/usr/share/doc/odrelay/examples/odpull.service" 2>/dev/null &&
    grep -q ' /usr/bin/odpull -c /etc/odpull.conf' \
    "$root/usr/share/doc/odrelay/examples/odpull.cron" 2>/dev/null &&
    grep -q '^ExecStart=/usr/bin/odpull --watch -c /etc/odpull.conf' \
    "$root/usr/share/doc/odrelay/examples/odpull-watch.service" 2>/dev/null &&
    [ -f "$root/usr/share/doc/odrelay/examples/odpull.timer" ]; then
	ok paths-substituted
else
	bad paths-substituted "odpull.service/-watch.service/.cron/.timer examples missing or wrong"
fi

# Compiled-in defaults follow --sysconfdir: -n without -c reads
# /etc/odrelay/odrelay.conf (only checked when this machine has none).
if [ -e /etc/odrelay/odrelay.conf ]; then
	skip default-config-path "/etc/odrelay/odrelay.conf exists on this machine"
else
	out=$("$root/usr/sbin/odrelayd" -n 2>&1)
	rc=$?
	case "$rc:$out" in
	2:*/etc/odrelay/odrelay.conf*) ok default-config-path ;;
	*) bad default-config-path "odrelayd -n without -c: exit $rc, $out" ;;
	esac
fi

# The example passes odrelayd -n once it names files that exist.
pw=$tmp/passwd
: >"$pw"
chmod 600 "$pw"
{ echo "passwd_file = $pw"; grep -v '^[[:space:]]*passwd_file[[:space:]]*=' "$ex"; } \
    >"$tmp/example.conf" 2>/dev/null
out=$("$root/usr/sbin/odrelayd" -n -c "$tmp/example.conf" 2>&1)
rc=$?
[ $rc -eq 0 ] && ok example-config-valid ||
    bad example-config-valid "odrelayd -n on the installed example: exit $rc: $out"

# --- the systemd unit ----------------------------------------------------
if [ -f "$unit" ]; then
	left=$(grep -n '@[a-zA-Z_]*@' "$unit")
	[ -z "$left" ] && ok unit-substituted || bad unit-substituted "unsubstituted: $left"
	paths_bad=
	for p in $(sed -n 's/^Exec[A-Za-z]*=[-@+!:]*\([^ ]*\).*/\1/p' "$unit"); do
		case $p in
		/usr/sbin/*|/usr/bin/*) [ -x "$root$p" ] || paths_bad="$paths_bad $p" ;;
		/bin/kill) ;;
		*) paths_bad="$paths_bad $p(unexpected)" ;;
		esac
	done
	grep -q '^ExecStart=/usr/sbin/odrelayd .*-c /etc/odrelay/odrelay.conf' "$unit" ||
	    paths_bad="$paths_bad ExecStart-not-/usr/sbin/odrelayd-with-/etc/odrelay/odrelay.conf"
	grep -q '^ReadWritePaths=/var/spool/odrelay$' "$unit" ||
	    paths_bad="$paths_bad ReadWritePaths-not-/var/spool/odrelay"
	[ -z "$paths_bad" ] && ok unit-paths || bad unit-paths "$paths_bad"

	# systemd-analyze checks the commands on this machine's root: verify
	# a copy whose program paths point into DESTDIR.
	if command -v systemd-analyze >/dev/null 2>&1; then
		mkdir -p "$tmp/unit"
		sed -e "s|=\([-@+!:]*\)/usr/sbin/|=\1$root/usr/sbin/|" "$unit" \
		    >"$tmp/unit/odrelayd.service"
		out=$(systemd-analyze verify --man=no "$tmp/unit/odrelayd.service" 2>&1)
		rc=$?
		# Unknown keys and bad values are only warnings (exit 0):
		# any output counts. Lines about this machine's missing
		# system units are not the unit's fault.
		out=$(printf '%s\n' "$out" | grep -v -e '^$' \
		    -e 'Unit [a-z.-]*\.target not found' \
		    -e 'Failed to create .*/start: Unit .* not found')
		if [ $rc -eq 0 ] && [ -z "$out" ]; then
			ok systemd-analyze-verify
		else
			bad systemd-analyze-verify "exit $rc: $out"
		fi
	else
		skip systemd-analyze-verify "systemd-analyze not installed"
	fi
fi

# --- manual pages render --------------------------------------------------
if command -v mandoc >/dev/null 2>&1; then
	out=$(mandoc -T lint -W warning "$root"/usr/share/man/man*/* 2>&1)
	rc=$?
	[ $rc -eq 0 ] && [ -z "$out" ] && ok mandoc-lint || bad mandoc-lint "exit $rc: $out"
else
	skip mandoc-lint "mandoc not installed"
fi
if command -v man >/dev/null 2>&1; then
	for f in "$root"/usr/share/man/man*/*; do
		name=$(basename "$f")
		MANWIDTH=80 man -l "$f" >"$tmp/man.out" 2>"$tmp/man.err" </dev/null
		rc=$?
		if [ $rc -ne 0 ]; then
			bad "man-l.$name" "man -l exit $rc: $(head -5 "$tmp/man.err")"
		elif ! grep -q 'NAME' "$tmp/man.out" || [ "$(wc -l <"$tmp/man.out")" -lt 20 ]; then
			bad "man-l.$name" "rendered page has no NAME section or is short"
		elif [ -s "$tmp/man.err" ]; then
			# troff warnings (e.g. a word taken as an mdoc macro)
			bad "man-l.$name" "renders with warnings: $(head -5 "$tmp/man.err")"
		else
			ok "man-l.$name"
		fi
	done
else
	skip man-l "man not installed"
fi

# --- the Debian package is inert until configured -------------------------
# debian/rules' own dh_installsystemd call on the installed unit: the
# generated postinst must not enable the unit on a first install (an
# enabled unit is still restarted on upgrades), and the package's postinst
# must not write a live configuration from the example.
if command -v dh_installsystemd >/dev/null 2>&1 && [ -f "$unit" ]; then
	pkg=$tmp/pkg
	mkdir -p "$pkg/debian/odrelay/lib/systemd/system"
	cp -r "$top_srcdir/debian/." "$pkg/debian/"
	cp "$unit" "$pkg/debian/odrelay/lib/systemd/system/"
	if ! (cd "$pkg" && make -s -f debian/rules override_dh_installsystemd) \
	    >"$tmp/dh.log" 2>&1; then
		bad deb-inert "dh_installsystemd failed: $(tail -5 "$tmp/dh.log")"
	elif grep -q 'Enables the unit on first installation' \
	    "$pkg"/debian/.debhelper/generated/odrelay/postinst*; then
		bad deb-inert "the package enables odrelayd on first install"
	elif grep -q 'odrelay.conf.example /etc/odrelay/odrelay.conf' \
	    "$top_srcdir/debian/odrelay.postinst"; then
		bad deb-inert "the package's postinst copies the example into place"
	else
		ok deb-inert
	fi
else
	skip deb-inert "dh_installsystemd (debhelper) not installed"
fi

# --- make uninstall removes every file ------------------------------------
if (cd "$build" && $MAKE uninstall DESTDIR="$root" >"$tmp/uninstall.log" 2>&1); then
	left=$(cd "$root" && find . -type f)
	[ -z "$left" ] && ok uninstall || bad uninstall "files left: $left"
else
	bad uninstall "make uninstall failed: $(tail -5 "$tmp/uninstall.log")"
fi

finish
