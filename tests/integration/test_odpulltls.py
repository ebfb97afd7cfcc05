#!/usr/bin/env python3
"""odpull --tls / --tls-fingerprint / --deliver-tls: the same meaning as
odrelay.conf(5) `tls` and `tls_fingerprint`, for the connection to the
provider (the real odrelayd) and to the local MTA."""

import hashlib
import os
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import check, prog, run_tests
from pullsink import Sink as PullSink
from sink import Sink as TlsSink
from test_odpull import (check_bodies, check_rc, daemon, odpull, pending,
    queue_empty, submit, sample_message, two_messages, up, wait_queue)


def pin(cert):
	with open(cert) as f:
		der = ssl.PEM_cert_to_DER_cert(f.read())
	return "sha256:" + hashlib.sha256(der).hexdigest()


def test_provider_fingerprint():
	"""--tls fingerprint: the provider's pinned certificate is accepted
	(no CA needed); a wrong pin stops before AUTH."""
	with daemon("odpull-fp", tls=True) as d, PullSink() as sink:
		up(d)
		q = submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("fp"))
		r = odpull(d, sink.port, "--domain", "example.org",
		    "--tls-fingerprint", "sha256:" + "00" * 32, tls="fingerprint")
		check_rc(r, 1, "wrong pin", sink, d)
		check("tls_fingerprint" in r.out, "reason not given:\n" + r.out)
		check("auth=" not in d.log_text(), "credentials sent to a wrong pin")
		check(pending(d, q) == ["user@example.org"], "q: %r" % pending(d, q))
		r = odpull(d, sink.port, "--domain", "example.org",
		    "--tls-fingerprint", pin(d.cert).upper(), tls="fingerprint")
		check_rc(r, 0, "right pin", sink, d)
		wait_queue(d, queue_empty, "empty after odpull")
		r = odpull(d, sink.port, "--domain", "example.org", tls="fingerprint")
		check(r.returncode == 2, "fingerprint without pins: exit %d"
		    % r.returncode)
		r = odpull(d, sink.port, "--domain", "example.org", tls="dane")
		check(r.returncode == 2, "--tls dane: exit %d" % r.returncode)


def test_deliver_tls():
	"""--deliver-tls encrypt against a local MTA without STARTTLS gives
	up (the mail stays at the provider); fingerprint against one with
	STARTTLS delivers inside TLS."""
	with daemon("odpull-dtls") as d, PullSink() as plain:
		up(d)
		q = submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("dtls"))
		r = odpull(d, plain.port, "--domain", "example.org",
		    "--deliver-tls", "encrypt")
		check_rc(r, 1, "--deliver-tls encrypt, no STARTTLS", plain, d)
		check("does not offer STARTTLS" in r.out, r.out)
		check(not plain.txns, "mail sent in clear:\n" + plain.dump())
		check(pending(d, q) == ["user@example.org"], "q: %r" % pending(d, q))
		cert_dir = d.dir
		from odtest import make_cert
		cert, key = make_cert(os.path.join(cert_dir))
		with TlsSink(starttls=True, cert=cert, key=key) as tsink:
			r = odpull(d, tsink.port, "--domain", "example.org",
			    "--deliver-tls", "fingerprint", "--deliver-fingerprint",
			    pin(cert))
			check_rc(r, 0, "--deliver-tls fingerprint", None, d)
			acc = tsink.wait_accepted(1)
			check(acc[0].tls, "local delivery without TLS")
		wait_queue(d, queue_empty, "empty after odpull")


if __name__ == "__main__":
	if not os.access(prog("odpull"), os.X_OK):
		print("SKIP odpulltls: %s not built" % prog("odpull"))
		sys.exit(77)
	run_tests([test_provider_fingerprint, test_deliver_tls], "odpulltls")
