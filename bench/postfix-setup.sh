#!/bin/sh
# bench/postfix-setup.sh - a private Postfix instance on loopback, set up as
# a backup MX that holds mail for example.org until ETRN (the ETRN_README
# recipe: relay_domains, fast_flush_domains, defer_transports = etrn-only
# and a transport map sending example.org to the "etrn-only" transport).
# Everything lives under one directory (config, queue, log); /etc/postfix is
# not touched. Needs root and the Debian package postfix ("No configuration").
#
# usage: sh bench/postfix-setup.sh start    write the config (if missing) and start
#        sh bench/postfix-setup.sh stop     stop the instance (keep the directory)
#        sh bench/postfix-setup.sh clear    delete every queued message (postsuper -d ALL)
#        sh bench/postfix-setup.sh teardown stop and remove the directory
#        sh bench/postfix-setup.sh env      print the settings below
# env:   BENCH_PF_DIR=/var/tmp/odrelay-bench-postfix   (same disk as the odrelayd queue)
#        BENCH_PF_PORT=2600                SMTP listener, 127.0.0.1 only
#        BENCH_PF_ROUTE='[127.0.0.1]:2601' where ETRN sends example.org's mail
#        BENCH_PF_LOG=1                    maillog_file (0: no log at all)
# "start" rewrites the config every time, so a new port or route applies.
set -u
dir=${BENCH_PF_DIR:-/var/tmp/odrelay-bench-postfix}
port=${BENCH_PF_PORT:-2600}
route=${BENCH_PF_ROUTE:-[127.0.0.1]:2601}
log=${BENCH_PF_LOG:-1}
etc=$dir/etc
PATH=$PATH:/usr/sbin:/sbin
export PATH

die() { echo "postfix-setup: $*" >&2; exit 1; }

running() {
	[ -f "$dir/spool/pid/master.pid" ] || return 1
	p=$(tr -d ' ' <"$dir/spool/pid/master.pid")
	[ -n "$p" ] && kill -0 "$p" 2>/dev/null
}

configure() {
	[ "$(id -u)" = 0 ] || die "must run as root (Postfix's master)"
	command -v postfix >/dev/null || die "postfix not installed: echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y postfix"
	mkdir -p "$etc" "$dir/spool" "$dir/data"
	chown postfix "$dir/data"
	# master.cf: the distribution's, nothing chrooted (the chroot would
	# need copies of /etc files), the public smtpd only on 127.0.0.1:PORT,
	# plus the ETRN_README "etrn-only" transport (an smtp client).
	cp /usr/share/postfix/master.cf.dist "$etc/master.cf" 2>/dev/null ||
	    cp /etc/postfix/master.cf "$etc/master.cf" || die "no master.cf to start from"
	: >"$etc/main.cf"
	postconf -c "$etc" -X smtp/inet 2>/dev/null
	postconf -c "$etc" -M# smtp/inet 2>/dev/null
	postconf -c "$etc" -Me "127.0.0.1:$port/inet = 127.0.0.1:$port inet n - n - - smtpd"
	postconf -c "$etc" -Me "etrn-only/unix = etrn-only unix - - n - - smtp"
	postconf -c "$etc" -F '*/*/chroot = n'
	printf 'example.org\tetrn-only:%s\n' "$route" >"$etc/transport"
	postconf -c "$etc" -e \
	    "compatibility_level = 3.6" \
	    "queue_directory = $dir/spool" \
	    "data_directory = $dir/data" \
	    "myhostname = backup-mx.bench.test" \
	    "mydomain = bench.test" \
	    "myorigin = \$myhostname" \
	    "mydestination =" \
	    "local_recipient_maps =" \
	    "local_transport = error:no local delivery" \
	    "inet_interfaces = loopback-only" \
	    "inet_protocols = ipv4" \
	    "mynetworks = 127.0.0.0/8" \
	    "relay_domains = example.org" \
	    "relay_recipient_maps =" \
	    "smtpd_relay_restrictions = permit_mynetworks, permit_auth_destination, reject" \
	    "smtpd_etrn_restrictions = permit_mynetworks, reject" \
	    "fast_flush_domains = \$relay_domains" \
	    "transport_maps = texthash:$etc/transport" \
	    "defer_transports = etrn-only" \
	    "message_size_limit = 0" \
	    "smtpd_banner = \$myhostname ESMTP" \
	    "biff = no" \
	    "alias_maps =" "alias_database =" \
	    "smtputf8_enable = no" \
	    "smtp_tls_security_level = none" \
	    "smtpd_tls_security_level = none"
	if [ "$log" = 1 ]; then
		postconf -c "$etc" -e "maillog_file = $dir/maillog"
	fi
	postfix -c "$etc" check || die "postfix check failed"
}

case "${1:-}" in
start)
	running && die "already running (sh $0 stop first)"
	configure
	postfix -c "$etc" start >/dev/null 2>&1 || die "postfix start failed"
	i=0
	until python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; do
		i=$((i + 1)); [ $i -gt 100 ] && die "smtpd not listening on 127.0.0.1:$port"
		sleep 0.1
	done
	;;
stop)
	if running; then
		p=$(tr -d ' ' <"$dir/spool/pid/master.pid")
		postfix -c "$etc" stop >/dev/null 2>&1
		i=0
		while kill -0 "$p" 2>/dev/null; do
			i=$((i + 1)); [ $i -gt 100 ] && die "master $p did not stop"
			sleep 0.1
		done
	fi
	;;
clear)
	[ -d "$etc" ] || exit 0
	postsuper -c "$etc" -d ALL >/dev/null 2>&1
	# the fast-flush logs name queue ids that are gone now
	rm -f "$dir"/spool/flush/*/* 2>/dev/null
	;;
teardown)
	sh "$0" stop
	rm -rf "$dir"
	;;
env)
	echo "BENCH_PF_DIR=$dir BENCH_PF_PORT=$port BENCH_PF_ROUTE=$route BENCH_PF_LOG=$log"
	;;
*)
	sed -n '2,/^set -u/p' "$0" | sed '$d'
	exit 2
	;;
esac
