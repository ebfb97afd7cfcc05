#!/bin/sh
# Install what odrelay needs to build and test on Debian 12 (bookworm).
# Runs apt-get as root (directly, or through sudo when available).
set -e
PKGS="build-essential autoconf automake libtool pkg-config
  libevent-dev libssl-dev liblmdb-dev libc-ares-dev check
  openssl lmdb-utils python3 swaks fetchmail dnsmasq-base mandoc man-db
  clang libclang-rt-14-dev valgrind"
# dpkg-buildpackage for debian/ (README "Operating"); prometheus for the
# alert rule tests (promtool) and the scrape test.
PKGS="$PKGS debhelper dpkg-dev fakeroot prometheus"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "installing:$missing"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# Packages with a service (prometheus) must not start it here: a CI root
# has no init, and tests start what they need themselves. A policy-rc.d
# that says "no" (101) is the Debian way; ours only while we install.
policy=/usr/sbin/policy-rc.d
ours=
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
	$SUDO chmod 755 "$policy"
	ours=1
fi
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing || rc=$?
[ -n "$ours" ] && $SUDO rm -f "$policy"
exit "${rc:-0}"
