#!/bin/sh
# Install what odrelay needs to build and test on Debian 12 (bookworm).
# Runs apt-get as root (directly, or through sudo when available).
set -e
PKGS="build-essential autoconf automake libtool pkg-config
  libevent-dev libssl-dev liblmdb-dev libc-ares-dev check
  openssl lmdb-utils python3 swaks fetchmail dnsmasq-base mandoc man-db
  postfix
  clang libclang-rt-14-dev valgrind"
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
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
