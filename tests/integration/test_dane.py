#!/usr/bin/env python3
"""DANE for SMTP (RFC 7672) with real DNS software: nsd serves zones the
test signs with ldns-signzone, unbound validates them with the test's
trust anchors on loopback and is the relay's only resolver. Downstream
SMTP servers present certificates that match (or not) the TLSA records.

Cases: DANE-EE match delivers (selector 1/matching 1 and selector
0/matching 2), DANE-TA match delivers, a mismatch defers, an insecure
zone falls back to `may` (its TLSA records are ignored), `dane-only` on an
insecure zone defers, bogus signatures defer; a recipient probe under
dane-only runs inside DANE-verified TLS."""

import hashlib
import os
import shutil
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import check, make_cert, run_tests
from sink import Sink
from dnssec import DnssecDns, Zone, query
from test_tlspolicy import (TlsFixture, flush, last_error, make_ca,
    make_leaf, no_mail, pubkey_sha256, queue_one, wait_error, wait_log)


def der(pem):
	with open(pem) as f:
		return ssl.PEM_cert_to_DER_cert(f.read())


def test_dane():
	tmp = tempfile.mkdtemp(prefix="odrelay-dane-")
	os.chmod(tmp, 0o755)
	try:
		run_dane(tmp)
	finally:
		shutil.rmtree(tmp, ignore_errors=True)


def run_dane(tmp):
	ca = make_ca(tmp, "ca")
	leaf = make_leaf(tmp, "mx", ca, "DNS:mx.dane.test,DNS:ta.dane.test,"
	    "DNS:ee0.dane.test,DNS:mx.insecure.test,DNS:mx.bogus.test")
	chain = os.path.join(tmp, "chain.pem")
	with open(chain, "w") as f:
		f.write(open(leaf[0]).read() + open(ca[0]).read())
	other_dir = os.path.join(tmp, "other")
	os.mkdir(other_dir)
	other = make_cert(other_dir)
	spki = pubkey_sha256(leaf[0])
	cert512 = hashlib.sha512(der(leaf[0])).hexdigest()
	ca256 = hashlib.sha256(der(ca[0])).hexdigest()
	with Sink(starttls=True, cert=chain, key=leaf[1]) as good, \
	    Sink(starttls=True, cert=other[0], key=other[1]) as bad:
		P, Q = good.port, bad.port
		zones = [
		    Zone("dane.test", [
			"mx IN A 127.0.0.1",
			"_%d._tcp.mx IN TLSA 3 1 1 %s" % (P, spki),
			"ta IN A 127.0.0.1",
			"_%d._tcp.ta IN TLSA 2 0 1 %s" % (P, ca256),
			"ee0 IN A 127.0.0.1",
			"_%d._tcp.ee0 IN TLSA 3 0 2 %s" % (P, cert512),
			"bad IN A 127.0.0.1",
			"_%d._tcp.bad IN TLSA 3 1 1 %s" % (Q, spki)]),
		    # Unsigned: its (wrong) TLSA record must be ignored.
		    Zone("insecure.test", [
			"mx IN A 127.0.0.1",
			"_%d._tcp.mx IN TLSA 3 1 1 %s" % (P, "00" * 32)],
			signed=False),
		    Zone("bogus.test", [
			"mx IN A 127.0.0.1",
			"_%d._tcp.mx IN TLSA 3 1 1 %s" % (P, spki)], bogus=True),
		]
		with DnssecDns(zones) as dns:
			# The set-up itself: secure, insecure, bogus as intended.
			r = query(dns.port, "_%d._tcp.mx.dane.test" % P, 52)
			check(r is not None and r[0] == 0 and r[1] and r[2] == 1,
			    "unbound: signed TLSA not authenticated: %r\n%s"
			    % (r, dns.log_text()[-2000:]))
			r = query(dns.port, "_%d._tcp.mx.insecure.test" % P, 52)
			check(r is not None and r[0] == 0 and not r[1],
			    "unbound: unsigned zone: %r" % (r,))
			r = query(dns.port, "_%d._tcp.mx.bogus.test" % P, 52)
			check(r is not None and r[0] == 2, "unbound: bogus zone: %r"
			    % (r,))

			def dom(name, host, port, mode="dane"):
				return ("[domain %s]\nhold = yes\nroute = %s:%d\n"
				    "tls = %s\n\n" % (name, host, port, mode))
			doms = (dom("ee.example", "mx.dane.test", P) +
			    dom("ta.example", "ta.dane.test", P) +
			    dom("ee0.example", "ee0.dane.test", P) +
			    dom("mismatch.example", "bad.dane.test", Q) +
			    dom("insecure.example", "mx.insecure.test", P) +
			    dom("only.example", "mx.insecure.test", P, "dane-only") +
			    dom("bogus.example", "mx.bogus.test", P) +
			    dom("probe.example", "mx.dane.test", P, "dane-only"))
			doms = doms.replace("[domain probe.example]\nhold = yes\n",
			    "[domain probe.example]\nhold = yes\n"
			    "verify_recipients = probe\nverify_unknown = tempfail\n")
			with TlsFixture("dane", dns_port=dns.port, domains=doms) as d:
				ids = {}
				for n in ("ee", "ta", "ee0", "mismatch", "insecure",
				    "only", "bogus"):
					ids[n] = queue_one(d, "u@%s.example" % n)
				delivered = 0
				for n in ("ee", "ta", "ee0"):
					flush(d, "%s.example" % n)
					delivered += 1
					good.wait_accepted(delivered)
					wait_log(d, r"%s\.example: delivery run ended.*"
					    r"tls=TLSv1\.[23], verified=dane" % n)
				check(all(t.tls for t in good.accepted()),
				    "DANE delivery without TLS")

				flush(d, "mismatch.example")
				err = wait_error(d, ids["mismatch"], r"^451 4\.7\.5 ")
				check("TLSA" in err, "reason: %r" % err)
				no_mail(bad)

				flush(d, "insecure.example")
				delivered += 1
				good.wait_accepted(delivered)
				wait_log(d, r"insecure\.example: delivery run ended.*"
				    r"verified=no")

				flush(d, "only.example")
				err = wait_error(d, ids["only"], r"^451 4\.7\.5 .*"
				    r"no DNSSEC-secure TLSA")

				flush(d, "bogus.example")
				err = wait_error(d, ids["bogus"], r"^451 4\.7\.5 .*"
				    r"TLSA lookup .* failed")
				check(len(good.accepted()) == delivered,
				    "mail delivered despite a failed DANE check: %s"
				    % good.txns)
				for n in ("ee", "ta", "ee0", "insecure"):
					check(last_error(d, ids[n]) is None,
					    "%s: still queued" % n)
				# Recipient probes under dane-only: TLSA looked up,
				# the probe runs inside DANE-verified TLS.
				queue_one(d, "p@probe.example")
				# The sink records the probe when its RSET arrives,
				# which may be just after our RCPT got its answer.
				for _ in range(100):
					probes = [t for t in good.txns
					    if "p@probe.example" in t.rcpts
					    and t.data is None]
					if probes:
						break
					time.sleep(0.05)
				check(probes and all(t.tls for t in probes),
				    "no probe inside TLS: %s" % good.txns)


def test_dane_needs_loopback_resolver():
	"""tls = dane with a resolver off loopback is a configuration error."""
	import re
	import subprocess
	from odtest import Fixture, prog
	d = Fixture("dane-conf", start=False,
	    domains="[domain x.test]\ntls = dane\n").d
	try:
		d.text = re.sub(r"(?m)^dns_servers = .*$",
		    "dns_servers = 192.0.2.53", d.text)
		with open(d.conf, "w") as f:
			f.write(d.text)
		r = subprocess.run([prog("odrelayd"), "-n", "-c", d.conf],
		    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
		out = r.stdout.decode(errors="replace")
		check(r.returncode != 0 and "loopback" in out,
		    "accepted: %s" % out)
	finally:
		d.cleanup(keep=False)


if __name__ == "__main__":
	run_tests([test_dane, test_dane_needs_loopback_resolver], "dane")
