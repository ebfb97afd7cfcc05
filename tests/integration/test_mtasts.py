#!/usr/bin/env python3
"""MTA-STS (RFC 8461) on delivery to MX hosts: dnsmasq serves the MX, host
and _mta-sts TXT records, a local HTTPS server (python, the test's own CA)
serves the policies. Cases: enforce delivers to a listed MX with a valid
certificate; enforce defers a certificate that does not name the MX and an
MX the policy does not list; testing only logs; the policy is cached
across a restart (still enforced with the policy server gone); an
unreachable policy server without a cached policy gives `may`."""

import http.server
import os
import re
import shutil
import ssl
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import check, free_port, run_tests
from sink import Sink
from dns import Dns
from test_tlspolicy import (TlsFixture, flush, last_error, make_ca,
    make_leaf, queue_one, wait_error, wait_log)

POLICIES = {
	"enf.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.enf.test\r\n"
	    "max_age: 86400\r\n",
	"bad.test": "version: STSv1\r\nmode: enforce\r\nmx: *.bad.test\r\n"
	    "max_age: 86400\r\n",
	"nomx.test": "version: STSv1\r\nmode: enforce\r\nmx: other.nomx.test\r\n"
	    "max_age: 86400\r\n",
	"tst.test": "version: STSv1\r\nmode: testing\r\nmx: mx.tst.test\r\n"
	    "max_age: 86400\r\n",
	"down.test": "version: STSv1\r\nmode: enforce\r\nmx: mx.down.test\r\n"
	    "max_age: 86400\r\n",
}


class PolicyServer:
	"""HTTPS on 127.0.0.1:port; the policy by Host header."""

	def __init__(self, port, cert, key):
		self.fetches = []
		outer = self

		class H(http.server.BaseHTTPRequestHandler):
			def do_GET(self):
				host = (self.headers.get("Host") or "").split(":")[0]
				outer.fetches.append((host, self.path))
				dom = host[len("mta-sts."):] if host.startswith(
				    "mta-sts.") else ""
				body = POLICIES.get(dom)
				if self.path != "/.well-known/mta-sts.txt" or body is None:
					self.send_error(404)
					return
				data = body.encode()
				self.send_response(200)
				self.send_header("Content-Type", "text/plain")
				self.send_header("Content-Length", str(len(data)))
				self.end_headers()
				self.wfile.write(data)

			def log_message(self, *a):
				pass

		self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
		ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
		ctx.load_cert_chain(cert, key)
		self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
		self.t = threading.Thread(target=self.srv.serve_forever,
		    kwargs={"poll_interval": 0.05}, daemon=True)
		self.t.start()

	def stop(self):
		self.srv.shutdown()
		self.srv.server_close()


def test_mtasts():
	tmp = tempfile.mkdtemp(prefix="odrelay-sts-")
	os.chmod(tmp, 0o755)
	try:
		run_sts(tmp)
	finally:
		shutil.rmtree(tmp, ignore_errors=True)


def run_sts(tmp):
	ca = make_ca(tmp, "ca")
	web = make_leaf(tmp, "web", ca, ",".join("DNS:mta-sts.%s" % d
	    for d in POLICIES))
	# The MX certificate names mx.enf.test and mx.down.test only.
	mx = make_leaf(tmp, "mx", ca, "DNS:mx.enf.test,DNS:mx.down.test")
	chain = os.path.join(tmp, "chain.pem")
	with open(chain, "w") as f:
		f.write(open(mx[0]).read() + open(ca[0]).read())
	web_port = free_port()
	mxs = [(d, "mx.%s" % d, 10) for d in POLICIES]
	hosts = [("mx.%s" % d, "127.0.0.1") for d in POLICIES] + \
	    [("mta-sts.%s" % d, "127.0.0.1") for d in POLICIES]
	txt = ["--txt-record=_mta-sts.%s,v=STSv1; id=%s1;" % (d, d.split(".")[0])
	    for d in POLICIES]
	web_srv = PolicyServer(web_port, web[0], web[1])
	try:
		with Sink(starttls=True, cert=chain, key=mx[1]) as sink, \
		    Dns(mx=mxs, hosts=hosts, extra=txt) as dns:
			doms = "".join("[domain %s]\nhold = yes\n%s\n" % (d,
			    "tls = sts\n" if d == "tst.test" else "")
			    for d in POLICIES)
			extra = ("delivery_port = %d\nmta_sts_port = %d\n"
			    "tls_ca_file = %s\n" % (sink.port, web_port, ca[0]))
			fx = TlsFixture("mtasts", dns_port=dns.port, domains=doms,
			    extra=extra)
			with fx as d:
				ids = {n: queue_one(d, "u@%s" % n) for n in POLICIES}
				# enforce, listed MX, valid certificate: delivered
				flush(d, "enf.test")
				sink.wait_accepted(1)
				wait_log(d, r"enf\.test: delivery run ended.*"
				    r"tls=TLSv1\.[23], verified=sts")
				# enforce, certificate without the MX's name
				flush(d, "bad.test")
				err = wait_error(d, ids["bad.test"], r"^451 4\.7\.5 "
				    r"MTA-STS: certificate of mx\.bad\.test not verified")
				# enforce, MX not in the policy: not even contacted
				n = sink.connections
				flush(d, "nomx.test")
				err = wait_error(d, ids["nomx.test"], r"^451 4\.7\.5 "
				    r"MTA-STS: MX host mx\.nomx\.test is not in")
				check(sink.connections == n, "an unlisted MX was contacted")
				# testing: the bad certificate is only logged
				flush(d, "tst.test")
				sink.wait_accepted(2)
				wait_log(d, r"mx\.tst\.test: MTA-STS: certificate .* "
				    r"not verified.*\(not enforced\)")
				check(len(sink.accepted()) == 2, "extra deliveries: %s"
				    % sink.txns)
				fetched = {h for h, _ in web_srv.fetches}
				check({"mta-sts.enf.test", "mta-sts.bad.test",
				    "mta-sts.tst.test"} <= fetched,
				    "policies not fetched: %s" % web_srv.fetches)

				# The policy server goes away; the daemon restarts.
				web_srv.stop()
				web_srv = None
				check(d.stop() == 0, "odrelayd did not stop cleanly")
				d.start()
				# bad.test: the cached enforce policy still holds.
				flush(d, "bad.test")
				wait_log(d, r"(?s)==== start.*==== start.*bad\.test: "
				    r"delivery run ended.*4\.7\.5 MTA-STS")
				check(re.match(r"^451 4\.7\.5 MTA-STS",
				    last_error(d, ids["bad.test"]) or ""),
				    "bad.test: %r" % last_error(d, ids["bad.test"]))
				# down.test: no cached policy, server unreachable: may.
				flush(d, "down.test")
				sink.wait_accepted(3, timeout=20)
				wait_log(d, r"mta-sts: down\.test: policy fetch failed")
				wait_log(d, r"down\.test: delivery run ended.*verified=no")
				check(len(sink.accepted()) == 3, "bad.test delivered "
				    "after the restart: %s" % sink.txns)
	finally:
		if web_srv is not None:
			web_srv.stop()


if __name__ == "__main__":
	run_tests([test_mtasts], "mtasts")
