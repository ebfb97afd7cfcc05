#!/bin/sh
# Install what odrelay needs to build and test on Debian 12 (bookworm).
# Runs apt-get as root (directly, or through sudo when available).
set -e
# swaks' STARTTLS (--tls) and IPv6 (-6) need two Perl modules that it only
# recommends, and recommends are not installed below.
PKGS="build-essential autoconf automake libtool pkg-config
  libevent-dev libssl-dev liblmdb-dev libc-ares-dev check
  openssl lmdb-utils python3 swaks fetchmail dnsmasq-base mandoc man-db
  libnet-ssleay-perl libio-socket-inet6-perl
  postfix
  clang libclang-rt-14-dev valgrind
  libmilter-dev rspamd opendkim opendkim-tools"
# dpkg-buildpackage for debian/ (README "Operating"); prometheus for the
# alert rule tests (promtool) and the scrape test.
PKGS="$PKGS debhelper dpkg-dev fakeroot prometheus"
# DANE tests (test_dane): nsd serves zones signed with ldns-signzone,
# unbound validates them; both started by the test, never as services.
PKGS="$PKGS nsd unbound ldnsutils"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "installing:$missing"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# postfix is the primary that test_verify starts itself: preseeded
# unconfigured, so its postinst neither asks nor starts a system instance.
case " $missing " in *" postfix "*)
	echo "postfix postfix/main_mailer_type select No configuration" |
	    $SUDO debconf-set-selections ;;
esac
# Filters (rspamd, opendkim) are started by the tests, never as services:
# keep their postinst from starting one (no init system in CI containers).
norc=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod 755 /usr/sbin/policy-rc.d
	norc=1
fi
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
[ -n "$norc" ] && $SUDO rm -f /usr/sbin/policy-rc.d
exit 0
