#!/usr/bin/env python3
"""DNS blocklists (issue 10): dnsbl, dnsbl_action, dnsbl_allow.

A dnsmasq on a loopback port serves the test lists: bl.test lists
127.0.0.1 with 127.0.0.2, codes.test lists it with 127.0.0.1 only (a
code the configuration does not accept).  slow.test is forwarded to a
UDP socket that never answers, so its lookups time out.  The client is
always 127.0.0.1, whose query name is 1.0.0.127.LIST.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, check, fail, run_tests, send_message,
    queued_id, prog)
from dns import Dns

MSG = (b"From: a@client.test\r\nTo: x@example.org\r\nSubject: dnsbl\r\n"
    b"\r\nbody\r\n")


def fixture(name, dns_port, extra):
	fx = Fixture(name, extra=extra, start=False)
	d = fx.d
	d.text = re.sub(r"(?m)^dns_servers = .*$",
	    "dns_servers = 127.0.0.1:%d" % dns_port, d.text)
	with open(d.conf, "w") as f:
		f.write(d.text)
	fx.start = True
	return fx


def dns_server(silent_port=None):
	extra = ["--local-ttl=60"]	# dnsmasq's default TTL is 0
	if silent_port is not None:
		extra.append("--server=/slow.test/127.0.0.1#%d" % silent_port)
	return Dns(hosts=[("1.0.0.127.bl.test", "127.0.0.2"),
	    ("1.0.0.127.codes.test", "127.0.0.1")], extra=extra)


def rcpt_reply(d, rcpt="x@example.org"):
	c = Conn(d.smtp_port)
	try:
		c.greet_ehlo()
		c.expect(250, "MAIL FROM:<a@client.test>")
		return c.cmd("RCPT TO:<%s>" % rcpt)
	finally:
		c.close()


def wait_log(d, pattern, bound=5.0):
	deadline = time.time() + bound
	while time.time() < deadline:
		m = re.search(pattern, d.log_text())
		if m:
			return m
		time.sleep(0.05)
	fail("no log line matching %r within %.0f s" % (pattern, bound))


def test_listed_refused_at_rcpt():
	"""Listed client: 554 5.7.1 at RCPT naming the list; the log names the
	client and the recipient; a hit is counted per list; a list answering
	with a code outside its CODES does not refuse."""
	with dns_server() as dns:
		with fixture("dnsbl-listed", dns.port,
		    "dnsbl = codes.test=127.0.0.[2..11] "
		    "bl.test=127.0.0.[2..11]\n") as d:
			code, text = rcpt_reply(d, "bob@example.org")
			check(code == 554 and "5.7.1" in text and "bl.test" in text
			    and "codes.test" not in text,
			    "listed client: expected 554 5.7.1 naming bl.test, got "
			    "%s %r" % (code, text))
			wait_log(d, r"reject: RCPT from \[127\.0\.0\.1\]: 554 5\.7\.1"
			    r".*blocked using bl\.test; to=<bob@example\.org>")
			st = d.ctl_ok("stats").out
			check('odrelay_dnsbl_hits_total{list="bl.test"}=1' in st
			    or re.search(r'dnsbl_hits_total\{list="bl\.test"\}\D*1',
			    st), "no DNSBL hit counted for bl.test:\n" + st)
			check("codes.test" not in re.sub(r"dnsbl = .*", "", st),
			    "codes.test counted as a hit:\n" + st)
			# A later connection is answered from the cache.
			n1 = dns.log_text().count("query[A] 1.0.0.127.bl.test")
			code, text = rcpt_reply(d)
			check(code == 554, "second connection: %s %r" % (code, text))
			n2 = dns.log_text().count("query[A] 1.0.0.127.bl.test")
			check(n1 >= 1 and n2 == n1, "bl.test asked again (%d, then "
			    "%d queries): the answer should come from the cache"
			    % (n1, n2))
			check(len(d.queue_ids()) == 0, "something was queued")


def test_allow_not_checked():
	"""A client in dnsbl_allow is never looked up and is accepted."""
	with dns_server() as dns:
		with fixture("dnsbl-allow", dns.port,
		    "dnsbl = bl.test\ndnsbl_allow = 10.0.0.0/8 127.0.0.0/8 "
		    "::1/128\n") as d:
			code, text = send_message(d.smtp_port, "a@client.test",
			    ["x@example.org"], MSG)
			check(code == 250 and queued_id(text),
			    "allowed client refused: %s %r" % (code, text))
			check("bl.test" not in dns.log_text(),
			    "an allowed client was looked up:\n" + dns.log_text())


def test_timeout_accepts():
	"""A list that never answers: the mail is accepted after
	dnsbl_timeout and the failure is logged; a dead DNS server too."""
	silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
	silent.bind(("127.0.0.1", 0))
	try:
		with dns_server(silent.getsockname()[1]) as dns:
			with fixture("dnsbl-timeout", dns.port,
			    "dnsbl = slow.test\ndnsbl_timeout = 1s\n") as d:
				code, text = send_message(d.smtp_port, "a@client.test",
				    ["x@example.org"], MSG)
				check(code == 250 and queued_id(text),
				    "DNS timeout refused mail: %s %r" % (code, text))
				wait_log(d, r"dnsbl: slow\.test lookup for \[127\.0\.0\.1\] "
				    r"timed out")
	finally:
		silent.close()
	# No DNS server at all (the harness's dead port): tempfail, accepted.
	with Fixture("dnsbl-dead", extra="dnsbl = bl.test\n") as d:
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], MSG)
		check(code == 250, "dead DNS refused mail: %s %r" % (code, text))
		wait_log(d, r"dnsbl: bl\.test lookup for \[127\.0\.0\.1\] failed")


def test_actions():
	"""dnsbl_action = tempfail answers 450 4.7.1; log accepts and logs."""
	with dns_server() as dns:
		with fixture("dnsbl-tempfail", dns.port,
		    "dnsbl = bl.test\ndnsbl_action = tempfail\n") as d:
			code, text = rcpt_reply(d)
			check(code == 450 and "4.7.1" in text and "bl.test" in text,
			    "tempfail: %s %r" % (code, text))
		with fixture("dnsbl-log", dns.port,
		    "dnsbl = bl.test\ndnsbl_action = log\n") as d:
			code, text = send_message(d.smtp_port, "a@client.test",
			    ["x@example.org"], MSG)
			check(code == 250, "action log refused: %s %r" % (code, text))
			wait_log(d, r"dnsbl: RCPT from \[127\.0\.0\.1\]: listed by "
			    r"bl\.test, to=<x@example\.org>, action=log")


def test_many_codes_and_cname():
	"""A list answering with more codes than the resolver keeps per name
	(dnsmasq rotates them, so the listing code is often past the eighth)
	still lists; a listing reached through a CNAME lists; a name not
	listed is accepted."""
	hosts = [("1.0.0.127.many.test", "127.0.1.%d" % i) for i in range(1, 40)]
	hosts.append(("1.0.0.127.many.test", "127.0.0.2"))
	hosts.append(("listed.alias.test", "127.0.0.2"))
	hosts.append(("1.0.0.127.other.test", "127.0.0.2"))
	with Dns(hosts=hosts, extra=["--local-ttl=60",
	    "--cname=1.0.0.127.cn.test,listed.alias.test"]) as dns:
		for lst, want in (("many.test", 554), ("cn.test", 554),
		    ("nothere.test", 250)):
			for i in range(3):
				# The 40-record answer is read again whole, over TCP
				# (truncated over UDP): give c-ares room for one retry
				# (5 s per try) on a slow (sanitizer) build.
				with fixture("dnsbl-many", dns.port, "dnsbl = %s=127.0.0.2\n"
				    "dnsbl_timeout = 8\n" % lst) as d:
					code, text = rcpt_reply(d)
					check(code == want, "%s (try %d): expected %d, got %s "
					    "%r" % (lst, i, want, code, text))
				if want == 250:
					break


def test_ipv6_client():
	"""A client on ::1 is looked up by its 32 nibbles (RFC 5782 2.4) and
	refused when listed; the IPv4 client of the same daemon is not."""
	from odtest import have_ipv6_loopback, Skip
	if not have_ipv6_loopback():
		raise Skip("::1 is not available")
	nib = ".".join("1" + "0" * 31) + ".v6bl.test"
	with Dns(hosts=[(nib, "127.0.0.2")], extra=["--local-ttl=60"]) as dns:
		fx = Fixture("dnsbl-v6", extra="dnsbl = v6bl.test\n", start=False,
		    ipv6=True)
		d = fx.d
		d.text = re.sub(r"(?m)^dns_servers = .*$",
		    "dns_servers = 127.0.0.1:%d" % dns.port, d.text)
		with open(d.conf, "w") as f:
			f.write(d.text)
		fx.start = True
		with fx:
			c = Conn(d.smtp6_port, host="::1", family=socket.AF_INET6)
			try:
				c.greet_ehlo()
				c.expect(250, "MAIL FROM:<a@client.test>")
				code, text = c.cmd("RCPT TO:<x@example.org>")
			finally:
				c.close()
			check(code == 554 and "v6bl.test" in text, "listed ::1: %s %r"
			    % (code, text))
			code, text = rcpt_reply(d)
			check(code == 250, "127.0.0.1 (not listed): %s %r"
			    % (code, text))


class ScriptedDns:
	"""A UDP DNS server on 127.0.0.1 answering every A query with: eight
	records of the name asked (codes 127.0.1.x) and then, for names in
	`wrong`, 127.0.0.2 owned by another name; for names in `cname`, a CNAME
	to the other name and its 127.0.0.2."""

	def __init__(self):
		self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
		self.sock.bind(("127.0.0.1", 0))
		self.port = self.sock.getsockname()[1]
		self.stopping = False
		threading.Thread(target=self._serve, daemon=True).start()

	@staticmethod
	def _name(n):
		return b"".join(bytes([len(l)]) + l for l in n.split(b".")) + b"\0"

	def _serve(self):
		import struct
		while not self.stopping:
			try:
				q, peer = self.sock.recvfrom(2048)
			except OSError:
				return
			qid = q[:2]
			i, labels = 12, []
			while q[i]:
				labels.append(q[i + 1:i + 1 + q[i]])
				i += 1 + q[i]
			question = q[12:i + 5]
			name = b".".join(labels).lower()
			rrs = []
			for k in range(8):
				rrs.append(b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4)
				    + bytes([127, 0, 1, k + 1]))
			other = b"elsewhere.test"
			if name.startswith(b"1.0.0.127.cname"):
				rrs = [b"\xc0\x0c" + struct.pack(">HHIH", 5, 1, 60,
				    len(self._name(other))) + self._name(other),
				    self._name(other) + struct.pack(">HHIH", 1, 1, 60, 4) +
				    bytes([127, 0, 0, 2])]
			else:
				rrs.append(self._name(other) + struct.pack(">HHIH", 1, 1,
				    60, 4) + bytes([127, 0, 0, 2]))
			hdr = qid + b"\x81\x80" + struct.pack(">HHHH", 1, len(rrs), 0, 0)
			try:
				self.sock.sendto(hdr + question + b"".join(rrs), peer)
			except OSError:
				pass

	def close(self):
		self.stopping = True
		self.sock.close()


def test_wrong_name_not_listed():
	"""A listing code owned by another name than the one asked is not a
	listing (also past the eighth record); one reached by a CNAME is."""
	dns = ScriptedDns()
	try:
		for lst, want in (("wrong.test", 250), ("cname.test", 554)):
			with fixture("dnsbl-wrong", dns.port, "dnsbl = %s=127.0.0.2\n"
			    % lst) as d:
				code, text = rcpt_reply(d)
				check(code == want, "%s: expected %d, got %s %r"
				    % (lst, want, code, text))
				check("lookup for" not in d.log_text(), "%s: no answer "
				    "read:\n%s" % (lst, d.log_text()[-1500:]))
	finally:
		dns.close()


def test_config_errors():
	"""Bad lists, codes and networks are FILE:LINE errors."""
	for bad in ("dnsbl = bl.test=127.0.0.[3..2]", "dnsbl = bad..list",
	    "dnsbl_allow = 10.0.0.0/33", "dnsbl_action = drop",
	    "dnsbl = bl.test=127.0.0"):
		fx = Fixture("dnsbl-bad", extra=bad + "\n", start=False)
		try:
			p = subprocess.run([prog("odrelayd"), "-n", "-c", fx.d.conf],
			    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
			    timeout=10)
			out = p.stdout.decode(errors="replace")
			check(p.returncode != 0 and re.search(r"odrelay\.conf:\d+:", out),
			    "%r: expected a FILE:LINE error, got %d %r"
			    % (bad, p.returncode, out))
		finally:
			fx.d.cleanup(keep=False)


if __name__ == "__main__":
	run_tests([test_listed_refused_at_rcpt, test_allow_not_checked,
	    test_timeout_accepts, test_actions, test_many_codes_and_cname,
	    test_ipv6_client, test_wrong_name_not_listed, test_config_errors],
	    "dnsbl")
