#!/usr/bin/env python3
"""Relay policy: no open relay, recipient lists, max_recipients."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, check, json_find, queued_id, run_tests)

EXTRA = "max_recipients = 3\n"

# (RCPT argument, expectation): "deny" = 550 5.7.1, "ok" = 250,
# "ok-or-deny" = 250 or 550 5.7.1, "ok-or-syntax" = 250 or a 5xx syntax
# refusal (never 4xx, never relay).
CASES = [
	("<u@other.net>", "deny"),
	("<u@OTHER.NET>", "deny"),
	# Sender-specified routing in the local part of a configured domain:
	# the domain is ours, so accepting is not relaying; refusing it (as
	# Postfix's allow_untrusted_routing = no does for relay domains, since
	# the customer's MTA might honour the %-hack) is safe too.
	("<user%other.net@example.org>", "ok-or-deny"),
	("<u%example.org@other.net>", "deny"),
	("<other.net!u@example.org>", "ok-or-deny"),
	("<example.org!u@other.net>", "deny"),
	("<@a.example,@b.example:u@other.net>", "deny"),
	("<@example.org:u@other.net>", "deny"),
	("<\"u@other.net\"@other.net>", "deny"),
	("<\"u@other.net\"@example.org>", "ok-or-deny"),
	("<u@[127.0.0.1]>", "deny"),
	("<u@[IPv6:::1]>", "deny"),
	("<u@example.org.evil.net>", "deny"),
	("<u@evilexample.org>", "deny"),
	("<u@sub.example.org>", "deny"),	# subdomains = no
	("<u@other.net.>", "deny"),
	("<u@EXAMPLE.ORG>", "ok"),
	("<u@Example.Org>", "ok"),
	("<u@example.org>", "ok"),
	("<u@example.org.>", "ok-or-syntax"),
	("<u@list.example>", "unknown"),
	("<alice@list.example>", "ok"),
	("<bob@LIST.EXAMPLE>", "ok"),
	("<carol@list.example>", "unknown"),
	("<alice@other.net>", "deny"),
]


def test_relay_refusal():
	with Fixture("policy", extra=EXTRA) as d:
		bad = []
		for arg, want in CASES:
			# A new session per case: refusals count toward the
			# daemon's error limit (max_errors).
			c = Conn(d.smtp_port)
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<s@client.test>")
			code, text = c.cmd("RCPT TO:" + arg)
			ok = {
				"deny": code == 550 and "5.7.1" in text,
				"unknown": code == 550 and "5.1.1" in text,
				"ok": code == 250,
				"ok-or-deny": code == 250 or (code == 550 and "5.7.1" in text),
				"ok-or-syntax": code == 250 or code in (501, 553, 550),
			}[want]
			if not ok:
				bad.append("RCPT TO:%s -> %s %r (want %s)" % (arg, code,
				    text, want))
			c.expect(250, "RSET")
			c.expect(221, "QUIT")
			c.close()
		check(not bad, "wrong RCPT replies:\n  " + "\n  ".join(bad))
		# Nothing can be queued for a refused domain.
		j = d.queue_json()
		check("other.net" not in json.dumps(j).replace("user%other.net", ""),
		    "other.net appears in the queue: %s" % json.dumps(j)[:2000])


def test_domain_quota():
	"""max_queue_size (issue 16): over it, new mail for the domain gets
	452 4.2.2 naming the domain's quota, at RCPT once the domain is over,
	or at the end of DATA when this message (no SIZE=) takes it over; what
	is queued stays; other domains are not affected."""
	domains = ("[domain example.org]\nhold = yes\nmax_queue_size = 20K\n\n"
	    "[domain list.example]\nhold = yes\n")
	body = b"Subject: quota\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100
	with Fixture("quota", domains=domains) as d:
		ids = []
		refusals = []
		for i in range(8):
			c = Conn(d.smtp_port)
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<s@client.test>")
			c.send(b"RCPT TO:<q%d@example.org>\r\n" % i)
			code, t = c.reply()
			if code == 250:
				c.expect(354, "DATA")
				c.send(body + b".\r\n")
				code, t = c.reply()
				where = "end of DATA"
			else:
				where = "RCPT"
			c.close()
			if code == 250:
				check(not refusals, "accepted after a quota refusal: %r"
				    % (refusals,))
				ids.append(queued_id(t))
			else:
				refusals.append((where, code, t))
				if len(refusals) >= 2:
					break
		check(refusals, "quota of 20K never reached with %d messages "
		    "of 7 KB" % len(ids))
		for where, code, t in refusals:
			check(code == 452 and "4.2.2" in t and "example.org" in t
			    and "quota" in t, "over quota at %s: %d %r (want 452 "
			    "4.2.2 naming example.org's quota)" % (where, code, t))
		# Announced with SIZE=, the same message is refused at RCPT.
		c = Conn(d.smtp_port)
		c.greet_ehlo()
		c.expect(250, "MAIL FROM:<s@client.test> SIZE=%d" % (len(body) + 3))
		t = c.expect(452, "RCPT TO:<sized@example.org>",
		    "RCPT of a message whose SIZE= takes the domain over its quota")
		check("4.2.2" in t and "example.org" in t, "SIZE= over quota at "
		    "RCPT: %r" % t)
		c.close()
		check(1 <= len(ids) <= 3, "%d messages accepted under a 20K quota"
		    % len(ids))
		j = d.queue_json()
		for qid in ids:
			check(json_find(j, qid) is not None, "%s lost after the quota "
			    "refusal" % qid)
		c = Conn(d.smtp_port)
		c.greet_ehlo()
		c.expect(250, "MAIL FROM:<s@client.test>")
		c.expect(250, "RCPT TO:<alice@list.example>")
		c.expect(354, "DATA")
		c.send(body + b".\r\n")
		c.expect(250, what="other domain under its own quota")
		c.close()


def test_max_recipients():
	with Fixture("maxrcpt", extra=EXTRA) as d:
		c = Conn(d.smtp_port)
		c.greet_ehlo()
		c.expect(250, "MAIL FROM:<s@client.test>")
		for i in range(3):
			c.expect(250, "RCPT TO:<r%d@example.org>" % i)
		t = c.expect(452, "RCPT TO:<r3@example.org>", "4th recipient")
		check("4.5.3" in t, "4th RCPT: no 4.5.3 in %r" % t)
		t = c.expect(452, "RCPT TO:<r4@example.org>", "5th recipient")
		c.expect(354, "DATA")
		c.send(b"Subject: max rcpt\r\n\r\nbody\r\n.\r\n")
		t = c.expect(250, what="end of data")
		qid = queued_id(t)
		c.expect(221, "QUIT")
		c.close()
		m = json_find(d.queue_json(), qid)
		check(m is not None, "message %s not in queue --json" % qid)
		flat = json.dumps(m)
		for i in range(3):
			check("r%d@example.org" % i in flat, "r%d missing: %s" % (i, flat))
		for i in (3, 4):
			check("r%d@example.org" % i not in flat,
			    "refused r%d is queued: %s" % (i, flat))


def test_turn_and_misc():
	with Fixture("misc") as d:
		c = Conn(d.smtp_port)
		c.greet_ehlo()
		c.expect(502, "TURN")
		c.expect(503, "RCPT TO:<u@example.org>", "RCPT before MAIL")
		c.expect(503, "DATA", "DATA before MAIL")
		c.expect(250, "MAIL FROM:<>", "null sender")
		c.expect(503, "MAIL FROM:<x@client.test>", "nested MAIL")
		c.expect(550, "RCPT TO:<u@other.net>")
		c.expect("5", "DATA", "DATA without valid recipients")
		c.expect(250, "NOOP")
		c.expect(221, "QUIT")
		c.close()


if __name__ == "__main__":
	run_tests([test_domain_quota, test_relay_refusal, test_max_recipients, test_turn_and_misc],
	    "policy")
