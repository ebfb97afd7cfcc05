#!/usr/bin/env python3
"""SMTP protocol behaviour: pipelining, smuggling, size, long lines, ETRN."""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, check, fail, json_find, queued_id,
    run_tests, send_message)

EXTRA = "max_message_size = 100K\n"


def replies_in(data):
	"""Final reply lines (code + text) found in raw server output."""
	out = []
	for line in data.decode(errors="replace").split("\r\n"):
		if len(line) >= 4 and line[:3].isdigit() and line[3] == " ":
			out.append(line)
		elif len(line) == 3 and line.isdigit():
			out.append(line)
	return out


def test_pipelining():
	with Fixture("pipe", extra=EXTRA) as d:
		c = Conn(d.smtp_port)
		t = c.greet_ehlo()
		check("PIPELINING" in t, "EHLO does not advertise PIPELINING:\n" + t)
		c.send("MAIL FROM:<p@client.test>\r\nRCPT TO:<a@example.org>\r\n"
		    "RCPT TO:<x@other.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
		for code, what in ((250, "MAIL"), (250, "RCPT a"), (550, "RCPT other"),
		    (250, "RCPT b"), (354, "DATA")):
			c.expect(code, what="pipelined " + what)
		c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<q@client.test>"
		    b"\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
		t = c.expect(250, what="end of data (pipelined)")
		qid = queued_id(t)
		check(qid, "no queue id in %r" % t)
		c.expect(250, what="second MAIL (pipelined after .)")
		c.expect(250, what="second RCPT")
		c.expect(354, what="second DATA")
		c.send(b"Subject: second\r\n\r\nbody 2\r\n.\r\nQUIT\r\n")
		t2 = c.expect(250, what="second end of data")
		c.expect(221, what="QUIT")
		c.close()
		qid2 = queued_id(t2)
		j = d.queue_json()
		m = json_find(j, qid)
		check(m is not None, "pipelined message %s not queued" % qid)
		flat = json.dumps(m)
		check("a@example.org" in flat and "b@example.org" in flat
		    and "other.net" not in flat, "recipients wrong: %s" % flat)
		check(json_find(j, qid2) is not None, "second message %s not queued"
		    % qid2)


SMUGGLE = [
	("LF.CRLF", b"\n.\r\n"),
	("CRLF.LF", b"\r\n.\n"),
	("LF.LF", b"\n.\n"),
	("CR.CR", b"\r.\r"),
	("CRLF.CR", b"\r\n.\r"),
	("CR.CRLF", b"\r.\r\n"),
]


def test_smuggling():
	with Fixture("smuggle", extra=EXTRA) as d:

		problems = []
		for name, sep in SMUGGLE:
			c = Conn(d.smtp_port)
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<good@client.test>")
			c.expect(250, "RCPT TO:<victim@example.org>")
			c.expect(354, "DATA")
			c.send(b"From: good@client.test\r\nSubject: smuggle " + name.encode()
			    + b"\r\n\r\nhello" + sep
			    + b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim@example.org>\r\n"
			    b"DATA\r\nFrom: evil@evil.test\r\nSubject: smuggled\r\n\r\nevil\r\n"
			    b".\r\n")
			# HELP is a sentinel: every reply before its 214 belongs
			# to the payload above.
			c.send(b"HELP\r\n")
			reps = []
			while True:
				code, t = c.reply()
				if code is None:
					problems.append("%s: connection closed, replies %r"
					    % (name, reps))
					break
				if code == 214:
					break
				reps.append(t)
			queued = [r for r in reps if "queued as" in r]
			if len(queued) > 1:
				problems.append("%s: two messages accepted: %r" % (name, reps))
			elif len(reps) != 1 or not reps[0].startswith("5"):
				problems.append("%s: expected one 5xx reply (bare CR/LF), got %r"
				    % (name, reps))
			# The session must still be in step.
			try:
				code, t = c.cmd("NOOP")
				if code != 250:
					problems.append("%s: NOOP after rejection: %s %r"
					    % (name, code, t))
			except Exception as e:
				problems.append("%s: session unusable after rejection: %s"
				    % (name, e))
			c.close()
		after = d.queue_json()
		flat = json.dumps(after)
		if "evil@evil.test" in flat:
			problems.append("smuggled sender evil@evil.test is queued")
		ids = d.queue_ids()
		if ids:
			problems.append("messages were queued: %s" % sorted(ids))
		check(not problems, "\n  ".join([""] + problems))


BAD_BODIES = [
	("bare LF", b"Subject: bare lf\r\n\r\nline one\nline two\r\n"),
	("bare CR", b"Subject: bare cr\r\n\r\nline one\rline two\r\n"),
	("NUL", b"Subject: nul\r\n\r\nline \x00 one\r\n"),
	("bare LF in header", b"Subject: x\nX-Evil: y\r\n\r\nbody\r\n"),
]


def test_bad_line_endings_and_nul():
	with Fixture("strict", extra=EXTRA) as d:
		c = Conn(d.smtp_port)
		c.greet_ehlo()
		problems = []
		for name, body in BAD_BODIES:
			c.expect(250, "MAIL FROM:<s@client.test>")
			c.expect(250, "RCPT TO:<strict@example.org>")
			c.expect(354, "DATA")
			c.send(body + b".\r\n")
			code, t = c.reply()
			if code is None or code < 500:
				problems.append("%s: expected 5xx, got %s %r" % (name, code, t))
			code, t = c.cmd("RSET")
			if code != 250:
				problems.append("%s: RSET after it: %s %r" % (name, code, t))
				break
		# A good message in the same session still works.
		c.expect(250, "MAIL FROM:<s@client.test>")
		c.expect(250, "RCPT TO:<strict@example.org>")
		c.expect(354, "DATA")
		c.send(b"Subject: good\r\n\r\nfine\r\n.\r\n")
		t = c.expect(250, what="good message after rejections")
		good = queued_id(t)
		c.cmd("QUIT")
		c.close()
		ids = d.queue_ids()
		check(ids == {good}, "queue should hold only %s, holds %s%s" % (good,
		    sorted(ids), "".join("\n  " + p for p in problems)))
		check(not problems, "\n  ".join([""] + problems))


def test_size_limits():
	with Fixture("size", extra=EXTRA) as d:
		c = Conn(d.smtp_port)
		t = c.greet_ehlo()
		m = re.search(r"SIZE (\d+)", t)
		check(m and int(m.group(1)) == 100 * 1024,
		    "EHLO SIZE should be 102400:\n" + t)
		t = c.expect(552, "MAIL FROM:<s@client.test> SIZE=200000",
		    "MAIL SIZE over limit")
		c.expect(250, "MAIL FROM:<s@client.test> SIZE=1000")
		c.expect(250, "RCPT TO:<big@example.org>")
		c.expect(354, "DATA")
		line = b"x" * 998 + b"\r\n"
		c.send(b"Subject: big\r\n\r\n" + line * 200 + b".\r\n")
		t = c.expect(552, what="200 KB body with 100K limit")
		check("5.3.4" in t, "no 5.3.4 in %r" % t)
		c.expect(250, "RSET")
		code, t = send_message(d.smtp_port, "s@client.test", ["small@example.org"],
		    b"Subject: small\r\n\r\n" + line * 50)
		check(code == 250, "50 KB message after the big one: %s %r" % (code, t))
		c.close()
		ids = d.queue_ids()
		check(ids == {queued_id(t)}, "queue should hold only the small message: %s"
		    % sorted(ids))


def test_long_line():
	with Fixture("longline", extra=EXTRA) as d:
		c = Conn(d.smtp_port)
		c.greet_ehlo()
		t = c.expect(500, "NOOP " + "x" * 3000, "3000-octet command line")
		check("5.5.2" in t, "no 5.5.2 in %r" % t)
		c.expect(250, "NOOP", "command after the long line")
		# A long MAIL line must not half-execute.
		c.expect(500, "MAIL FROM:<" + "a" * 3000 + "@client.test>")
		c.expect(250, "MAIL FROM:<ok@client.test>", "MAIL after long line")
		c.expect(250, "RCPT TO:<u@example.org>")
		# Long line sent in pieces across several writes.
		c.send("RCPT TO:<" + "b" * 1500)
		time.sleep(0.2)
		c.send("b" * 1500 + "@example.org>\r\nRSET\r\n")
		c.expect(500, what="long RCPT line in two writes")
		c.expect(250, what="RSET after it")
		# 2,000 octets is within the 2,048 limit: not a line-length error.
		c.expect(250, "NOOP " + "y" * 1990, "2000-octet NOOP (limit is 2048)")
		c.expect(221, "QUIT")
		c.close()


ETRN_RE = re.compile(r"^(250|251|252|253|458|459) [245]\.\d{1,3}\.\d{1,3}( |$)")


def test_etrn():
	with Fixture("etrn", extra=EXTRA) as d:
		code, t = send_message(d.smtp_port, "s@client.test", ["e@example.org"],
		    b"Subject: etrn\r\n\r\nwaiting\r\n")
		check(code == 250, "queueing: %s %r" % (code, t))
		qid = queued_id(t)
		c = Conn(d.smtp_port)
		t = c.greet_ehlo()
		check("ETRN" in t, "EHLO does not advertise ETRN:\n" + t)
		for arg in ("example.org", "@example.org", "#example.org",
		    "list.example"):
			code, t = c.cmd("ETRN " + arg)
			check("\n" not in t, "ETRN reply is not a single line: %r" % t)
			check(ETRN_RE.match(t), "ETRN %s: unexpected reply %r" % (arg, t))
		code, t = c.cmd("ETRN list.example")
		check(code in (251, 458), "ETRN of an empty domain: %r" % t)
		t = c.expect(501, "ETRN", "ETRN without argument")
		code, t = c.cmd("ETRN other.net")
		check(code in (458, 459) or code >= 500,
		    "ETRN for an unconfigured domain: %r" % t)
		c.expect(250, "MAIL FROM:<s@client.test>")
		c.expect(503, "ETRN example.org", "ETRN inside a transaction")
		c.expect(250, "RSET")
		c.expect(221, "QUIT")
		c.close()
		# Delivery cannot succeed (no DNS): the message must stay queued.
		time.sleep(1.0)
		check(json_find(d.queue_json(), qid) is not None,
		    "message %s vanished after a failing ETRN delivery" % qid)


if __name__ == "__main__":
	run_tests([test_pipelining, test_smuggling, test_bad_line_endings_and_nul,
	    test_size_limits, test_long_line, test_etrn], "protocol")
