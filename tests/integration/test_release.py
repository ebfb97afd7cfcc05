#!/usr/bin/env python3
"""Release: ETRN, odrelayctl flush, outbound delivery over MX and routes,
backup-MX retries, bounces.

The daemon delivers to recording SMTP sinks (sink.py) on loopback;
MX lookups go to a dnsmasq (dns.py) on a loopback port, and
delivery_port points MX-found hosts at the sinks.  127.0.0.2 and
127.0.0.3 are loopback addresses too, so two MX hosts are two sinks on
the same port.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Failure, Fixture, check, fail, fetchmail_argv, free_port, json_find,
    json_ids, make_cert, queued_id, run_tests, send_message)
from sink import Sink
from pullsink import msg_rcpts
from dns import Dns

SENDER = "alice@sender.test"
RETRY = "retry_min = 1s\nretry_max = 2s\n"


class RelFixture(Fixture):
	"""A Fixture whose daemon asks our dnsmasq (dns_port) for MX records.

	The harness writes its own dns_servers line (a dead port); a
	duplicate key is a configuration error, so replace that line."""

	def __init__(self, name, dns_port=None, **kw):
		super().__init__(name, **kw)
		if dns_port is not None:
			d = self.d
			d.text = re.sub(r"(?m)^dns_servers = .*$",
			    "dns_servers = 127.0.0.1:%d" % dns_port, d.text)
			with open(d.conf, "w") as f:
				f.write(d.text)

	def __exit__(self, et, ev, tb):
		# A test that passed also needs a clean stop (exit 0) and no
		# sanitizer report in the log (builds with --enable-sanitizers).
		if et is None and self.d.proc is not None:
			try:
				rc = self.d.stop()
				log = self.d.log_text()
				san = re.search(r"(ERROR: AddressSanitizer|ERROR: "
				    r"LeakSanitizer|runtime error:).*", log)
				check(rc == 0, "odrelayd exited with status %s on SIGTERM"
				    % rc)
				check(san is None, "sanitizer report in the daemon log: %s"
				    % (san.group(0) if san else ""))
			except Failure as e:
				et, ev = Failure, e
				super().__exit__(et, ev, None)
				raise
		return super().__exit__(et, ev, tb)


def message(i, rcpts, extra=b""):
	"""A test message with CRLF endings; lines that need dot-stuffing,
	a long line and trailing spaces, so any alteration shows."""
	hdr = ("From: Alice <%s>\r\nTo: %s\r\nSubject: release test %d\r\n"
	    "Message-ID: <rel-%d-%f@sender.test>\r\n"
	    "Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n\r\n"
	    % (SENDER, ", ".join(rcpts), i, i, time.time())).encode()
	body = (b"Body of message %d.\r\n" % i
	    + b".leading dot\r\n..two dots\r\n.\tdot tab\r\n"
	    + b"trailing spaces   \r\n\r\n"
	    + b"x" * 1500 + b"\r\n"
	    + extra
	    + b"last line %d\r\n" % i)
	return hdr + body


def queue(d, n, rcpts, sender=SENDER, start=0):
	"""Send n messages; return [(qid, data)]."""
	out = []
	for i in range(start, start + n):
		data = message(i, rcpts)
		code, text = send_message(d.smtp_port, sender, rcpts, data)
		check(code == 250, "message %d not accepted: %s %s" % (i, code, text))
		qid = queued_id(text)
		check(qid, "no queue id in %r" % text)
		out.append((qid, data))
	return out


def etrn(d, node, want=None):
	"""ETRN on a new connection; returns (code, text)."""
	c = Conn(d.smtp_port)
	try:
		c.greet_ehlo()
		code, text = c.cmd("ETRN " + node)
		c.cmd("QUIT")
	finally:
		c.close()
	if want is not None:
		ok = code in want if isinstance(want, (tuple, list)) else code == want
		check(ok, "ETRN %s: expected %s, got %s %r" % (node, want, code, text))
	return code, text


def wait_queue(d, pred, timeout=8.0, what="queue condition"):
	deadline = time.time() + timeout
	while True:
		j = d.queue_json()
		if pred(j):
			return j
		if time.time() > deadline:
			fail("timed out after %.0f s waiting for %s; queue --json:\n%s"
			    % (timeout, what, json.dumps(j)[:3000]))
		time.sleep(0.1)


def wait_queue_empty(d, timeout=8.0):
	return wait_queue(d, lambda j: not json_ids(j), timeout, "an empty queue")


def find_txn(sink, data):
	"""The accepted transactions whose data ends with the original message."""
	return [t for t in sink.accepted() if t.data.endswith(data)]


def check_delivered(sink, data, rcpts, sender=SENDER):
	"""data arrived exactly once, byte-identical after our Received
	header, from sender, with exactly rcpts (over one or more
	transactions)."""
	ts = find_txn(sink, data)
	check(ts, "message %r... not delivered intact; sink has:\n%s"
	    % (data[60:120], "\n".join(repr(t) for t in sink.txns)))
	got = []
	for t in ts:
		check(t.mail_from == sender, "MAIL FROM <%s>, expected <%s>"
		    % (t.mail_from, sender))
		prefix = t.data[:len(t.data) - len(data)]
		check(prefix.startswith(b"Received:"),
		    "delivered message does not start with a Received header: %r"
		    % t.data[:200])
		# Everything before the original is header lines (Received,
		# folded), nothing else and no change to the message itself.
		for line in prefix.split(b"\r\n")[:-1]:
			check(line.startswith((b"Received:", b" ", b"\t")),
			    "unexpected line %r added before the message" % line)
		check(prefix.endswith(b"\r\n"), "prefix does not end a line")
		check(b"relay.test" in prefix, "our Received header does not name "
		    "the relay (hostname relay.test): %r" % prefix)
		got.extend(a.lower() for a in t.rcpts)
	check(sorted(got) == sorted(r.lower() for r in rcpts),
	    "recipients delivered %s, expected %s (each exactly once)"
	    % (sorted(got), sorted(rcpts)))


def dsn_check(dsink, failed, sender=SENDER, timeout=8.0):
	"""A DSN for address failed reached dsink; returns its data."""
	def have():
		return [t for t in dsink.accepted()
		    if failed.encode() in t.data]
	dsink.wait(lambda: have(), timeout, "a DSN mentioning %s" % failed)
	t = have()[0]
	check(t.mail_from == "", "DSN sent with MAIL FROM <%s>, expected <>"
	    % t.mail_from)
	check([r.lower() for r in t.rcpts] == [sender.lower()],
	    "DSN sent to %s, expected %s" % (t.rcpts, sender))
	low = t.data.lower()
	check(b"multipart/report" in low and b"delivery-status" in low,
	    "DSN is not a multipart/report; delivery-status:\n%r" % t.data[:1500])
	check(re.search(rb"(?im)^final-recipient:\s*rfc822;\s*<?"
	    + re.escape(failed.encode()), t.data),
	    "DSN has no Final-Recipient for %s:\n%r" % (failed, t.data[:3000]))
	check(re.search(rb"(?im)^action:\s*failed", t.data),
	    "DSN has no 'Action: failed':\n%r" % t.data[:3000])
	check(re.search(rb"(?im)^status:\s*5\.", t.data),
	    "DSN has no 5.x.x Status:\n%r" % t.data[:3000])
	check(b"message/rfc822" in low or b"text/rfc822-headers" in low,
	    "DSN does not include the original message or its headers:\n%r"
	    % t.data[:3000])
	return t.data


def sender_domain(port):
	"""Domain section for the senders' domain: delivered at once to the
	DSN sink on port."""
	return "\n[domain sender.test]\nhold = no\nroute = [127.0.0.1]:%d\n" % port


# --- tests ---------------------------------------------------------------

def test_etrn_releases_over_mx():
	"""3 held messages x 2 recipients, ETRN -> 253 3, delivered via the
	MX byte-identical, queue empty."""
	with Sink() as sink, Dns(mx=[("example.org", "mx1.test", 10)],
	    hosts=[("mx1.test", "127.0.0.1")]) as dns:
		with RelFixture("rel-mx", dns_port=dns.port,
		    extra="delivery_port = %d\n" % sink.port) as d:
			rcpts = ["u1@example.org", "u2@example.org"]
			msgs = queue(d, 3, rcpts)
			ids = set(json_ids(d.queue_json()))
			check(ids == set(q for q, _ in msgs),
			    "queue lists %s, expected %s" % (ids, [q for q, _ in msgs]))
			time.sleep(0.3)
			check(sink.connections == 0,
			    "held mail was delivered before any ETRN")
			code, text = etrn(d, "example.org", 253)
			check(re.search(r"\b3\b", text), "253 reply without the count 3: %r"
			    % text)
			sink.wait_accepted(3)
			for _, data in msgs:
				check_delivered(sink, data, rcpts)
			wait_queue_empty(d)
			time.sleep(0.3)
			check(len(sink.accepted()) == 3, "more than 3 deliveries: %s"
			    % sink.txns)
			check(all(t.helo for t in sink.txns), "no EHLO name")


def test_etrn_at_subdomains():
	"""ETRN @example.org flushes example.org and its subdomains (whole
	labels only: not badexample.org)."""
	with Sink() as sink, Sink() as other:
		domains = ("\n[domain example.org]\nhold = yes\nsubdomains = yes\n"
		    "route = [127.0.0.1]:%d\n"
		    "[domain badexample.org]\nhold = yes\nroute = [127.0.0.1]:%d\n"
		    % (sink.port, other.port))
		with RelFixture("rel-sub", domains=domains) as d:
			m1 = queue(d, 1, ["a@sub.example.org"])
			m2 = queue(d, 1, ["b@deep.sub.example.org"], start=1)
			m3 = queue(d, 1, ["c@example.org"], start=2)
			m4 = queue(d, 1, ["d@badexample.org"], start=3)
			etrn(d, "@example.org", (250, 252, 253))
			sink.wait_accepted(3)
			check_delivered(sink, m1[0][1], ["a@sub.example.org"])
			check_delivered(sink, m2[0][1], ["b@deep.sub.example.org"])
			check_delivered(sink, m3[0][1], ["c@example.org"])
			ids = wait_queue(d, lambda j: len(json_ids(j)) == 1, what=
			    "only the badexample.org message left")
			check(set(json_ids(ids)) == {m4[0][0]},
			    "left in queue: %s, expected %s" % (json_ids(ids), m4[0][0]))
			check(other.connections == 0,
			    "ETRN @example.org delivered badexample.org mail")
			etrn(d, "@badexample.org", (250, 252, 253))
			other.wait_accepted(1)
			check_delivered(other, m4[0][1], ["d@badexample.org"])
			wait_queue_empty(d)


def test_etrn_at_many_sections():
	"""ETRN @example.org among 3,000 sections (read from the label index,
	not a walk of them all) flushes exactly the sections named
	example.org or under it, whole labels: not badexample.org, not the
	etrn = no one (odrelayctl flush @example.org takes that one), not
	the others."""
	with Sink() as sink, Sink() as other:
		filler = "".join("[domain d%d.test]\nhold = yes\n" % i
		    for i in range(3000))
		cut = len(filler) // 3
		cut = filler.index("[domain", cut)
		domains = ("\n" + filler[:cut] +
		    "[domain mx.example.org]\nhold = yes\nroute = [127.0.0.1]:%d\n"
		    "[domain badexample.org]\nhold = yes\nroute = [127.0.0.1]:%d\n"
		    % (sink.port, other.port) + filler[cut:] +
		    "[domain a.b.example.org]\nhold = yes\netrn = no\n"
		    "route = [127.0.0.1]:%d\n"
		    "[domain Example.ORG]\nhold = yes\nroute = [127.0.0.1]:%d\n"
		    % (sink.port, sink.port))
		with RelFixture("rel-at-many", domains=domains) as d:
			top = queue(d, 1, ["t@example.org"])
			mx = queue(d, 1, ["m@mx.example.org"], start=1)
			no = queue(d, 1, ["n@a.b.example.org"], start=2)
			bad = queue(d, 1, ["b@badexample.org"], start=3)
			fill = queue(d, 1, ["f@d2999.test"], start=4)
			code, text = etrn(d, "@EXAMPLE.org.", 253)
			check(" 2 pending" in text, "ETRN @EXAMPLE.org.: %r" % text)
			sink.wait_accepted(2)
			check_delivered(sink, top[0][1], ["t@example.org"])
			check_delivered(sink, mx[0][1], ["m@mx.example.org"])
			left = wait_queue(d, lambda j: len(json_ids(j)) == 3,
			    what="three messages left")
			check(set(json_ids(left)) == {no[0][0], bad[0][0], fill[0][0]},
			    "left: %s" % json_ids(left))
			etrn(d, "@b.example.org", 459)
			etrn(d, "@xample.org", 459)
			r = d.ctl_ok("flush", "@example.org")
			check(r.out.startswith("253 1 "), "flush @example.org: %r" % r.out)
			sink.wait_accepted(3)
			check_delivered(sink, no[0][1], ["n@a.b.example.org"])
			left = wait_queue(d, lambda j: len(json_ids(j)) == 2,
			    what="two messages left")
			check(set(json_ids(left)) == {bad[0][0], fill[0][0]},
			    "left: %s" % json_ids(left))
			check(other.connections == 0,
			    "ETRN @example.org delivered badexample.org mail")


def pending(d):
	"""Every recipient still queued, sorted."""
	from odtest import json_messages
	return sorted(a.lower() for m in json_messages(d.queue_json())
	    for a in msg_rcpts(m))


SUBDOMS = ("\n[domain example.org]\nhold = yes\nsubdomains = yes\n"
    "route = [127.0.0.1]:%d\n")


def test_etrn_subdomain_node():
	"""A section example.org with subdomains = yes: ETRN sub.example.org
	delivers sub.example.org's recipients only (not those of
	example.org or deep.sub.example.org, even in the same message);
	ETRN @sub.example.org adds deep.sub.example.org; example.org's mail
	stays; a node under no section gets 459."""
	with Sink() as sink:
		with RelFixture("rel-node", domains=SUBDOMS % sink.port) as d:
			m1 = queue(d, 1, ["a@sub.example.org"])
			m2 = queue(d, 1, ["b@example.org"], start=1)
			m3 = queue(d, 1, ["c@deep.sub.example.org"], start=2)
			m4 = queue(d, 1, ["e@sub.example.org", "f@example.org",
			    "g@deep.sub.example.org"], start=3)
			code, text = etrn(d, "sub.example.org", 253)
			check(re.search(r"\b2 pending", text),
			    "253 reply without the count 2: %r" % text)
			sink.wait_accepted(2)
			check_delivered(sink, m1[0][1], ["a@sub.example.org"])
			check_delivered(sink, m4[0][1], ["e@sub.example.org"])
			wait_queue(d, lambda j: pending(d) == ["b@example.org",
			    "c@deep.sub.example.org", "f@example.org",
			    "g@deep.sub.example.org"], what="sub.example.org delivered")
			etrn(d, "SUB.example.org.", 251)
			code, text = etrn(d, "@sub.example.org", 253)
			check(re.search(r"\b2 pending", text),
			    "253 reply without the count 2: %r" % text)
			sink.wait_accepted(4)
			check_delivered(sink, m3[0][1], ["c@deep.sub.example.org"])
			wait_queue(d, lambda j: pending(d) == ["b@example.org",
			    "f@example.org"], what="deep.sub.example.org delivered")
			etrn(d, "@sub.example.org", 251)
			etrn(d, "sub.example.net", 459)
			time.sleep(0.3)
			got = sink.delivered_rcpts()
			check(sorted(got) == ["a@sub.example.org",
			    "c@deep.sub.example.org", "e@sub.example.org",
			    "g@deep.sub.example.org"], "delivered %r" % got)
			check_delivered(sink, m4[0][1], ["e@sub.example.org",
			    "g@deep.sub.example.org"])
			check(len(find_txn(sink, m2[0][1])) == 0,
			    "example.org's mail went out")


def test_etrn_subdomain_node_mx_and_etrn_no():
	"""No route: ETRN sub.example.org goes to sub.example.org's MX, not
	example.org's; a section with etrn = no refuses its nodes (459)."""
	port = free_port(host="127.0.0.3")
	with Sink(port=port) as subsink, Sink(host="127.0.0.3", port=port) as \
	    parent, Dns(mx=[("sub.example.org", "mx1.test", 10),
	    ("example.org", "mx2.test", 10)], hosts=[("mx1.test", "127.0.0.1"),
	    ("mx2.test", "127.0.0.3")]) as dns:
		domains = ("\n[domain example.org]\nhold = yes\n"
		    "subdomains = yes\n"
		    "[domain example.net]\nhold = yes\nsubdomains = yes\n"
		    "etrn = no\nroute = [127.0.0.1]:%d\n" % port)
		with RelFixture("rel-node-mx", dns_port=dns.port, domains=domains,
		    extra="delivery_port = %d\n" % port) as d:
			m1 = queue(d, 1, ["a@sub.example.org", "b@example.org"])
			queue(d, 1, ["n@sub.example.net"], start=1)
			etrn(d, "sub.example.org", 253)
			subsink.wait_accepted(1)
			check_delivered(subsink, m1[0][1], ["a@sub.example.org"])
			etrn(d, "sub.example.net", 459)
			etrn(d, "@sub.example.net", 459)
			time.sleep(0.3)
			check(parent.connections == 0,
			    "example.org's MX was used for sub.example.org")
			check(pending(d) == ["b@example.org", "n@sub.example.net"],
			    "pending %r" % pending(d))
			check(len(subsink.accepted()) == 1, "%d deliveries"
			    % len(subsink.accepted()))


def test_etrn_subdomain_node_once():
	"""A repeated ETRN sub.example.org while its run goes gets 250 and
	starts nothing; a flush of the whole section started during it (and
	an ETRN @sub.example.org then) deliver each recipient once, and the
	section's recipients of the messages the subdomain's run had leased
	are delivered once that run lets them go (not left for the next
	ETRN)."""
	with Sink() as sink:
		sink.data_delay = 0.3
		with RelFixture("rel-node-once", domains=SUBDOMS % sink.port) as d:
			subs = queue(d, 3, ["s@sub.example.org", "v@example.org"])
			deep = queue(d, 2, ["t@deep.sub.example.org"], start=3)
			top = queue(d, 2, ["u@example.org"], start=5)
			c = Conn(d.smtp_port)
			try:
				c.greet_ehlo()
				c.send("ETRN sub.example.org\r\nETRN sub.example.org\r\n")
				got = [c.reply() for _ in range(2)]
				# its connection holds the three messages' leases
				sink.wait(lambda: sink.connections >= 1, 5,
				    "the subdomain's delivery")
				c.send("ETRN @example.org\r\nETRN @sub.example.org\r\n")
				got += [c.reply() for _ in range(2)]
				c.cmd("QUIT")
			finally:
				c.close()
			check(got[0][0] == 253 and " 3 pending" in got[0][1],
			    "first ETRN sub.example.org: %r" % (got[0],))
			check(got[1][0] == 250, "repeated ETRN sub.example.org: %r"
			    % (got[1],))
			check(got[2][0] == 253, "ETRN @example.org: %r" % (got[2],))
			check(got[3][0] == 250, "ETRN @sub.example.org during the "
			    "section's flush: %r" % (got[3],))
			wait_queue_empty(d, timeout=15)
			time.sleep(0.5)
			for _, data in subs:
				check_delivered(sink, data, ["s@sub.example.org",
				    "v@example.org"])
			for _, data in deep:
				check_delivered(sink, data, ["t@deep.sub.example.org"])
			for _, data in top:
				check_delivered(sink, data, ["u@example.org"])
			got = sorted(sink.delivered_rcpts())
			want = sorted(["s@sub.example.org", "v@example.org"] * 3 +
			    ["t@deep.sub.example.org"] * 2 + ["u@example.org"] * 2)
			check(got == want, "delivered %r" % got)

def test_etrn_unknown_empty_rate():
	"""Unknown node -> 459; nothing queued -> 251; etrn_rate = 2 -> the
	third ETRN within a minute gets 458."""
	with RelFixture("rel-codes", extra="etrn_rate = 2\n") as d:
		# The limit counts per minute; keep the three in one minute.
		if time.time() % 60 > 57:
			time.sleep(60 - time.time() % 60 + 0.1)
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(459, "ETRN unknown.test")
			c.expect(251, "ETRN example.org")
			t = c.expect(458, "ETRN example.org", what="third ETRN with "
			    "etrn_rate = 2")
			check("\n" not in t, "multi-line ETRN reply %r" % t)
			c.cmd("QUIT")
		finally:
			c.close()
		# A new connection from the same address is limited too.
		etrn(d, "list.example", 458)


def test_etrn_twice_delivers_once():
	"""Two ETRNs in a row (pipelined, and again during the run): each
	message is delivered exactly once."""
	with Sink() as sink:
		sink.data_delay = 0.3
		domains = ("\n[domain example.org]\nhold = yes\n"
		    "route = [127.0.0.1]:%d\n" % sink.port)
		with RelFixture("rel-twice", domains=domains) as d:
			rcpts = ["x@example.org", "y@example.org"]
			msgs = queue(d, 3, rcpts)
			c = Conn(d.smtp_port)
			try:
				c.greet_ehlo()
				c.send("ETRN example.org\r\n")
				c.send("ETRN example.org\r\n")
				c1, t1 = c.reply()
				c2, t2 = c.reply()
				check(c1 == 253, "first ETRN: %s %r" % (c1, t1))
				check(c2 in (250, 251, 252, 253), "second ETRN: %s %r" % (c2, t2))
				time.sleep(0.2)
				c3, t3 = c.cmd("ETRN example.org")
				check(c3 in (250, 251, 252, 253), "third ETRN: %s %r" % (c3, t3))
				c.cmd("QUIT")
			finally:
				c.close()
			sink.wait_accepted(3)
			wait_queue_empty(d)
			etrn(d, "example.org", 251)
			time.sleep(0.5)
			for _, data in msgs:
				check_delivered(sink, data, rcpts)
			check(len(sink.accepted()) == 3, "%d deliveries for 3 messages: %s"
			    % (len(sink.accepted()), sink.txns))


def test_backup_mx_order():
	"""First MX down (nothing on 127.0.0.2) -> the second (127.0.0.3) is
	used; with both up the preferred one gets the mail."""
	port = free_port(host="127.0.0.3")
	with Sink(host="127.0.0.3", port=port) as mx2, \
	    Dns(mx=[("example.org", "mx1.test", 10),
	    ("example.org", "mx2.test", 20)],
	    hosts=[("mx1.test", "127.0.0.2"), ("mx2.test", "127.0.0.3")]) as dns:
		with RelFixture("rel-backup", dns_port=dns.port,
		    extra="delivery_port = %d\n" % port) as d:
			msgs = queue(d, 1, ["m@example.org"])
			etrn(d, "example.org", 253)
			mx2.wait_accepted(1)
			check_delivered(mx2, msgs[0][1], ["m@example.org"])
			wait_queue_empty(d)
			with Sink(host="127.0.0.2", port=port) as mx1:
				msgs = queue(d, 1, ["n@example.org"], start=1)
				etrn(d, "example.org", 253)
				mx1.wait_accepted(1)
				check_delivered(mx1, msgs[0][1], ["n@example.org"])
				wait_queue_empty(d)
				check(len(mx2.accepted()) == 1,
				    "the less preferred MX got mail while the first was up")


def test_550_gets_dsn():
	"""A recipient refused with 550 is returned to the sender by a
	multipart/report DSN; the other recipient is delivered.  A refused
	message from the null sender is dropped without a DSN."""
	with Sink() as sink, Sink() as dsink:
		sink.rcpt_replies["bad@example.org"] = "550 5.1.1 no such user here"
		domains = ("\n[domain example.org]\nhold = yes\n"
		    "route = [127.0.0.1]:%d\n" % sink.port + sender_domain(dsink.port))
		with RelFixture("rel-dsn", domains=domains) as d:
			msgs = queue(d, 1, ["good@example.org", "bad@example.org"])
			# From the null sender, every recipient refused: no DATA,
			# no DSN (never for <>), and it must leave the queue.
			queue(d, 1, ["bad@example.org"], sender="", start=1)
			etrn(d, "example.org", 253)
			sink.wait_accepted(1)
			check_delivered(sink, msgs[0][1], ["good@example.org"])
			dsn = dsn_check(dsink, "bad@example.org")
			check(b"no such user here" in dsn,
			    "DSN lacks the remote server's reply")
			wait_queue_empty(d)
			check(len(dsink.accepted()) == 1, "%d DSNs, expected 1"
			    % len(dsink.accepted()))


def test_4xx_stays_queued():
	"""A recipient answered 450 stays queued (no DSN) while the other
	recipients and messages are delivered; a second ETRN after the sink
	is fixed delivers it, each recipient exactly once."""
	with Sink() as sink, Sink() as dsink:
		sink.rcpt_replies["later@example.org"] = "450 4.2.1 mailbox busy"
		domains = ("\n[domain example.org]\nhold = yes\n"
		    "route = [127.0.0.1]:%d\n" % sink.port + sender_domain(dsink.port))
		with RelFixture("rel-4xx", domains=domains) as d:
			a = queue(d, 1, ["ok@example.org", "later@example.org"])
			b = queue(d, 1, ["whole@example.org"], start=1)
			etrn(d, "example.org", 253)
			sink.wait(lambda: len(sink.txns) >= 2, 8, "two transactions")
			time.sleep(0.5)
			j = d.queue_json()
			ent = json_find(j, a[0][0])
			check(ent is not None, "message with a 450 recipient left the "
			    "queue:\n%s" % json.dumps(j)[:2000])
			check("mailbox busy" in json.dumps(ent) or "450" in json.dumps(ent),
			    "queue --json does not show the last error (450 mailbox "
			    "busy): %s" % json.dumps(ent)[:2000])
			check("later@example.org" in json.dumps(ent),
			    "queue entry lacks the pending recipient: %s"
			    % json.dumps(ent)[:2000])
			check(len(dsink.txns) == 0, "a DSN was sent for a 4xx: %s"
			    % dsink.txns)
			check_delivered(sink, b[0][1], ["whole@example.org"])
			oks = [r for r in sink.delivered_rcpts() if r == "ok@example.org"]
			check(oks == ["ok@example.org"], "ok@example.org delivered %d times"
			    % len(oks))
			del sink.rcpt_replies["later@example.org"]
			etrn(d, "example.org", (250, 252, 253))
			sink.wait(lambda: "later@example.org" in sink.delivered_rcpts(),
			    8, "later@example.org delivered")
			wait_queue_empty(d)
			check_delivered(sink, a[0][1], ["ok@example.org",
			    "later@example.org"])
			rc = sink.delivered_rcpts()
			check(rc.count("ok@example.org") == 1 and
			    rc.count("later@example.org") == 1,
			    "deliveries per recipient: %s" % rc)
			check(len(dsink.txns) == 0, "a DSN was sent: %s" % dsink.txns)


def test_451_at_end_of_data():
	"""451 after the data keeps the message; the next ETRN delivers it."""
	with Sink() as sink:
		sink.data_replies = ["451 4.3.0 try again later"]
		domains = ("\n[domain example.org]\nhold = yes\n"
		    "route = [127.0.0.1]:%d\n" % sink.port)
		with RelFixture("rel-451", domains=domains) as d:
			m = queue(d, 1, ["w@example.org", "v@example.org"])
			etrn(d, "example.org", 253)
			sink.wait(lambda: any(t.reply and t.reply.startswith("451")
			    for t in sink.txns), 8, "the 451 transaction")
			time.sleep(0.5)
			check(m[0][0] in set(json_ids(d.queue_json())),
			    "message answered 451 at end-of-data left the queue")
			check(not sink.accepted(), "delivered despite 451: %s" % sink.txns)
			# The named-queue form; a domain's queue name is its name.
			etrn(d, "#example.org", (250, 252, 253))
			sink.wait_accepted(1)
			check_delivered(sink, m[0][1], ["w@example.org", "v@example.org"])
			wait_queue_empty(d)


def test_drop_mid_data():
	"""The sink drops the connection in the middle of DATA: nothing is
	lost; the next ETRN delivers the message exactly once."""
	with Sink() as sink:
		sink.drop_data = 1
		domains = ("\n[domain example.org]\nhold = yes\n"
		    "route = [127.0.0.1]:%d\n" % sink.port)
		with RelFixture("rel-drop", domains=domains) as d:
			m = queue(d, 1, ["p@example.org", "q@example.org"])
			etrn(d, "example.org", 253)
			sink.wait(lambda: any(t.aborted for t in sink.txns), 8,
			    "the dropped transaction")
			time.sleep(0.7)
			if not sink.accepted():
				j = d.queue_json()
				check(m[0][0] in set(json_ids(j)),
				    "message lost after a connection drop mid-DATA:\n%s"
				    % json.dumps(j)[:2000])
				etrn(d, "example.org", (250, 252, 253))
				sink.wait_accepted(1)
			check_delivered(sink, m[0][1], ["p@example.org", "q@example.org"])
			wait_queue_empty(d)
			time.sleep(0.3)
			check(len(sink.accepted()) == 1, "delivered %d times"
			    % len(sink.accepted()))


def test_hold_no_retries():
	"""hold = no: delivery is tried at once, retried with backoff while the
	destination is down, and done once it comes up (no ETRN)."""
	sink = Sink(start=False)
	try:
		domains = ("\n[domain backup.test]\nhold = no\n"
		    "route = [127.0.0.1]:%d\n" % sink.port)
		with RelFixture("rel-retry", extra=RETRY, domains=domains) as d:
			m = queue(d, 1, ["r@backup.test", "s@backup.test"])
			# The first attempt fails (connection refused): deferred.
			j = wait_queue(d, lambda j: (json_find(j, m[0][0]) or {})
			    .get("attempts", 0) >= 1 or "defer" in json.dumps(
			    json_find(j, m[0][0]) or {}), 5,
			    "a failed first attempt")
			check(m[0][0] in set(json_ids(j)), "message left the queue "
			    "while its destination was down")
			sink.start()
			sink.wait_accepted(1, timeout=8)
			check_delivered(sink, m[0][1], ["r@backup.test", "s@backup.test"])
			wait_queue_empty(d)
	finally:
		sink.stop()


def test_null_mx_bounces():
	"""A domain with a null MX (RFC 7505): the mail is returned at once."""
	with Sink() as dsink, Dns(rr=[("nullmx.test", 15, "000000")]) as dns:
		domains = ("\n[domain nullmx.test]\nhold = no\n"
		    + sender_domain(dsink.port))
		with RelFixture("rel-nullmx", dns_port=dns.port, extra=RETRY,
		    domains=domains) as d:
			queue(d, 1, ["nobody@nullmx.test"])
			dsn_check(dsink, "nobody@nullmx.test")
			wait_queue_empty(d)


def test_outbound_extensions():
	"""STARTTLS is used when offered; no PIPELINING/SIZE is handled; a
	message over the server's SIZE is returned (552, DSN); a 452 for
	too many recipients is sent again in a further transaction on the
	same connection."""
	tmp = tempfile.mkdtemp(prefix="odrelay-rel-cert-")
	try:
		cert, key = make_cert(tmp)
		with Sink(starttls=True, cert=cert, key=key) as tls, \
		    Sink(pipelining=False, size=0) as plain, \
		    Sink(size=1000) as small, Sink() as few, \
		    Sink() as dsink:
			few.max_rcpts = 2
			domains = "".join("\n[domain %s]\nhold = yes\n"
			    "route = [127.0.0.1]:%d\n" % (n, s.port) for n, s in
			    (("tls.test", tls), ("plain.test", plain),
			    ("small.test", small), ("few.test", few))) \
			    + sender_domain(dsink.port)
			with RelFixture("rel-ext", domains=domains) as d:
				mt = queue(d, 1, ["t@tls.test"])
				mp = queue(d, 1, ["p@plain.test", "q@plain.test"], start=1)
				queue(d, 1, ["big@small.test"], start=2)
				mf = queue(d, 1, ["a@few.test", "b@few.test", "c@few.test"],
				    start=3)
				for dom in ("tls.test", "plain.test", "small.test", "few.test"):
					etrn(d, dom, 253)
				tls.wait_accepted(1)
				check(tls.accepted()[0].tls, "STARTTLS offered but the "
				    "message was sent in plaintext")
				check_delivered(tls, mt[0][1], ["t@tls.test"])
				check(any(c.upper().startswith("MAIL FROM:") and "SIZE=" in
				    c.upper() for c in tls.commands),
				    "no SIZE= on MAIL although SIZE was advertised: %s"
				    % tls.commands)
				plain.wait_accepted(1)
				check_delivered(plain, mp[0][1], ["p@plain.test", "q@plain.test"])
				check(not any("SIZE=" in c.upper() for c in plain.commands),
				    "SIZE= sent to a server that did not offer SIZE: %s"
				    % plain.commands)
				dsn_check(dsink, "big@small.test")
				check(not small.accepted(), "message over the advertised SIZE "
				    "was sent: %s" % small.txns)
				few.wait(lambda: len(few.delivered_rcpts()) >= 3, 8,
				    "three recipients after a 452")
				check_delivered(few, mf[0][1], ["a@few.test", "b@few.test",
				    "c@few.test"])
				check(few.connections == 1, "452 retry used %d connections, "
				    "expected the same session" % few.connections)
				wait_queue_empty(d)
	finally:
		shutil.rmtree(tmp, ignore_errors=True)


def test_dns_implicit_and_tempfail():
	"""No MX but an A record: implicit MX, delivered there.  A temporary
	DNS failure (the server answers REFUSED) defers: no bounce, the mail
	stays queued."""
	with Sink() as sink, Sink() as dsink, \
	    Dns(hosts=[("implicit.test", "127.0.0.1")]) as dns:
		domains = ("\n[domain implicit.test]\nhold = yes\n"
		    "[domain broken.zzz]\nhold = yes\n" + sender_domain(dsink.port))
		with RelFixture("rel-dns", dns_port=dns.port,
		    extra="delivery_port = %d\n" % sink.port, domains=domains) as d:
			mi = queue(d, 1, ["i@implicit.test"])
			mb = queue(d, 1, ["b@broken.zzz"], start=1)
			etrn(d, "implicit.test", 253)
			etrn(d, "broken.zzz", 253)
			sink.wait_accepted(1)
			check_delivered(sink, mi[0][1], ["i@implicit.test"])
			j = wait_queue(d, lambda j: mi[0][0] not in json_ids(j), 5,
			    "the implicit-MX message to leave the queue")
			time.sleep(1.0)
			check(mb[0][0] in set(json_ids(d.queue_json())),
			    "message left the queue after a temporary DNS failure")
			check(not dsink.txns, "DSN sent for a temporary DNS failure: %s"
			    % dsink.txns)


def test_backup_mx_skips_self():
	"""hold = no backup MX: the domain's MX set lists us (our hostname,
	relay.test) below the primary.  RFC 5321 5.1: drop our own entry and
	every less preferred one, so the mail waits for the primary and is
	retried until it is up, never sent to ourselves."""
	port = free_port(host="127.0.0.2")
	with Sink(host="127.0.0.4", port=port) as selfsink, \
	    Dns(mx=[("backup.test", "primary.test", 10),
	    ("backup.test", "relay.test", 20)],
	    hosts=[("primary.test", "127.0.0.2"),
	    ("relay.test", "127.0.0.4")]) as dns:
		primary = Sink(host="127.0.0.2", port=port, start=False)
		try:
			domains = "\n[domain backup.test]\nhold = no\n"
			with RelFixture("rel-selfmx", dns_port=dns.port, domains=domains,
			    extra=RETRY + "delivery_port = %d\n" % port) as d:
				m = queue(d, 1, ["z@backup.test"])
				time.sleep(1.5)
				check(selfsink.connections == 0,
				    "the relay delivered to its own MX entry (relay.test, "
				    "preference 20) instead of waiting for the primary: %s"
				    % selfsink.txns)
				check(m[0][0] in set(json_ids(d.queue_json())),
				    "message left the queue while the primary was down")
				primary.start()
				primary.wait_accepted(1, timeout=8)
				check_delivered(primary, m[0][1], ["z@backup.test"])
				wait_queue_empty(d)
				check(selfsink.connections == 0,
				    "the relay connected to its own MX entry")
		finally:
			primary.stop()


def test_queue_lifetime_returns():
	"""A held message older than its domain's queue_lifetime is returned
	to the sender (DSN, Action: failed) and leaves the queue."""
	with Sink() as dsink:
		domains = ("\n[domain expire.test]\nhold = yes\nqueue_lifetime = 1s\n"
		    + sender_domain(dsink.port))
		with RelFixture("rel-expire", domains=domains) as d:
			queue(d, 1, ["old@expire.test"])
			# The first expiry scan runs a few seconds after start.
			dsn_check(dsink, "old@expire.test", timeout=14)
			wait_queue_empty(d)


def test_multi_domain_message():
	"""One message for two held customers: ETRN for one releases only
	that customer's recipient, to that customer's route; the other's
	copy waits for its own ETRN."""
	with Sink() as sa, Sink() as sb:
		domains = ("\n[domain example.org]\nhold = yes\nroute = [127.0.0.1]:%d\n"
		    "[domain other.example]\nhold = yes\nroute = [127.0.0.1]:%d\n"
		    % (sa.port, sb.port))
		with RelFixture("rel-multi", domains=domains) as d:
			m = queue(d, 1, ["a@example.org", "b@other.example",
			    "a2@example.org"])
			etrn(d, "example.org", 253)
			sa.wait_accepted(1)
			check_delivered(sa, m[0][1], ["a@example.org", "a2@example.org"])
			time.sleep(0.3)
			check(sb.connections == 0, "other.example's route was contacted "
			    "by ETRN example.org")
			j = d.queue_json()
			ent = json_find(j, m[0][0])
			check(ent is not None and "b@other.example" in json.dumps(ent),
			    "the other.example recipient is not queued any more:\n%s"
			    % json.dumps(j)[:2000])
			etrn(d, "other.example", 253)
			sb.wait_accepted(1)
			check_delivered(sb, m[0][1], ["b@other.example"])
			wait_queue_empty(d)
			time.sleep(0.2)
			check(len(sa.accepted()) == 1, "example.org got %d copies"
			    % len(sa.accepted()))


def test_ctl_flush():
	"""odrelayctl flush DOMAIN releases like ETRN."""
	with Sink() as sink:
		domains = ("\n[domain example.org]\nhold = yes\n"
		    "route = [127.0.0.1]:%d\n" % sink.port)
		with RelFixture("rel-flush", domains=domains) as d:
			rcpts = ["f1@example.org", "f2@example.org"]
			msgs = queue(d, 2, rcpts)
			r = d.ctl_ok("flush", "example.org")
			sink.wait_accepted(2)
			for _, data in msgs:
				check_delivered(sink, data, rcpts)
			wait_queue_empty(d)
			r = d.ctl("flush", "unknown.test")
			check(r.returncode != 0, "flush of an unknown domain exited 0: %s%s"
			    % (r.out, r.err))


def test_ctl_flush_forms():
	"""odrelayctl flush takes ETRN's node forms with ETRN's effect
	(spec: "same effect as ETRN DOMAIN"): under subdomains = yes, flush
	example.org delivers example.org's recipients only, flush
	sub.example.org that subdomain's, flush @example.org the rest; the
	section's etrn = no does not stop the operator; bad forms exit 2."""
	with Sink() as sink:
		domains = (SUBDOMS % sink.port) + "etrn = no\n"
		with RelFixture("rel-flush-forms", domains=domains) as d:
			top = queue(d, 1, ["t@example.org"])
			sub = queue(d, 1, ["s@sub.example.org"], start=1)
			deep = queue(d, 1, ["x@deep.sub.example.org"], start=2)
			r = d.ctl_ok("flush", "example.org")
			check(r.out.startswith("253 1 "), "flush example.org: %r" % r.out)
			sink.wait_accepted(1)
			check_delivered(sink, top[0][1], ["t@example.org"])
			wait_queue(d, lambda j: pending(d) == ["s@sub.example.org",
			    "x@deep.sub.example.org"], what="example.org delivered")
			r = d.ctl_ok("flush", "sub.example.org")
			check(r.out.startswith("253 1 "), "flush sub.example.org: %r" % r.out)
			sink.wait_accepted(2)
			check_delivered(sink, sub[0][1], ["s@sub.example.org"])
			r = d.ctl_ok("flush", "@example.org")
			check(r.out.startswith("253 1 "), "flush @example.org: %r" % r.out)
			sink.wait_accepted(3)
			check_delivered(sink, deep[0][1], ["x@deep.sub.example.org"])
			wait_queue_empty(d)
			r = d.ctl_ok("flush", "#example.org")
			check(r.out.startswith("251"), "flush #example.org, empty: %r" % r.out)
			for bad in ("@", "#", "@bad..domain"):
				r = d.ctl("flush", bad)
				check(r.returncode == 2, "flush %r exited %d: %s%s" %
				    (bad, r.returncode, r.out, r.err))
			etrn(d, "example.org", 459)


def test_fetchmail_etrn():
	"""fetchmail --protocol ETRN gets a one-line RFC 1985 reply and the
	flush happens."""
	if shutil.which("fetchmail") is None:
		fail("fetchmail not found (sh contrib/install-deps.sh)")
	with Sink() as sink:
		domains = ("\n[domain example.org]\nhold = yes\n"
		    "route = [127.0.0.1]:%d\n" % sink.port)
		with RelFixture("rel-fetchmail", domains=domains) as d:
			rcpts = ["fm@example.org"]
			msgs = queue(d, 2, rcpts)
			home = tempfile.mkdtemp(prefix="odrelay-fm-")
			try:
				rc = os.path.join(home, "fetchmailrc")
				with open(rc, "w") as f:
					f.write("set no syslog\n"
					    "poll 127.0.0.1 service %d protocol ETRN "
					    "fetchdomains example.org\n" % d.smtp_port)
				os.chmod(rc, 0o600)
				env = dict(os.environ, HOME=home, FETCHMAILHOME=home)
				r = subprocess.run(fetchmail_argv(["fetchmail", "-f", rc,
				    "-v", "--nodetach", "--pidfile", os.path.join(home, "pid")]),
				    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
				    env=env, timeout=30)
				out = r.stdout.decode(errors="replace")
			finally:
				shutil.rmtree(home, ignore_errors=True)
			check(r.returncode == 0, "fetchmail exit %d:\n%s"
			    % (r.returncode, out))
			check(re.search(r"ETRN example\.org", out) and
			    re.search(r"(?i)pending messages for example\.org started|"
			    r"queuing for example\.org started", out),
			    "fetchmail output lacks the ETRN exchange:\n" + out)
			sink.wait_accepted(2)
			for _, data in msgs:
				check_delivered(sink, data, rcpts)
			wait_queue_empty(d)


if __name__ == "__main__":
	run_tests([
	    test_etrn_releases_over_mx,
	    test_etrn_at_subdomains,
	    test_etrn_at_many_sections,
	    test_etrn_subdomain_node,
	    test_etrn_subdomain_node_mx_and_etrn_no,
	    test_etrn_subdomain_node_once,
	    test_etrn_unknown_empty_rate,
	    test_etrn_twice_delivers_once,
	    test_backup_mx_order,
	    test_550_gets_dsn,
	    test_4xx_stays_queued,
	    test_451_at_end_of_data,
	    test_drop_mid_data,
	    test_hold_no_retries,
	    test_null_mx_bounces,
	    test_outbound_extensions,
	    test_dns_implicit_and_tempfail,
	    test_backup_mx_skips_self,
	    test_queue_lifetime_returns,
	    test_multi_domain_message,
	    test_ctl_flush,
	    test_ctl_flush_forms,
	    test_fetchmail_etrn,
	], "release")
