#!/usr/bin/env python3
"""Hold: mail for a held domain is queued and visible to odrelayctl."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Fixture, check, fail, json_find, queued_id, run_tests,
    send_message, swaks)


def test_swaks_queue_show_delete():
	with Fixture("hold") as d:
		r = swaks(d.smtp_port, "user@example.org", "--header",
		    "Subject: hold test one", "--body", "hello held world")
		check(r.returncode == 0, "swaks failed (exit %d):\n%s"
		    % (r.returncode, r.out))
		check("250 2.0.0" in r.out and "queued as" in r.out,
		    "no '250 ... queued as ID' reply:\n" + r.out)
		qid = queued_id(r.out)
		check(qid, "cannot find the queue id in:\n" + r.out)

		q = d.ctl_ok("queue")
		for want in (qid, "sender@client.test", "user@example.org",
		    "example.org", "held"):
			check(want in q.out, "odrelayctl queue: %r missing:\n%s"
			    % (want, q.out))

		j = d.queue_json()
		m = json_find(j, qid)
		check(m is not None, "queue --json has no message %s:\n%s"
		    % (qid, json.dumps(j)[:2000]))
		flat = json.dumps(m)
		for want in ("sender@client.test", "user@example.org", "example.org",
		    "held"):
			check(want in flat, "queue --json entry lacks %r: %s" % (want, flat))

		# Filter by domain: the message is listed for example.org only.
		q = d.ctl_ok("queue", "example.org")
		check(qid in q.out, "queue example.org does not list %s:\n%s"
		    % (qid, q.out))
		q = d.ctl_ok("queue", "list.example")
		check(qid not in q.out, "queue list.example lists %s:\n%s"
		    % (qid, q.out))

		s = d.ctl_ok("show", qid)
		for want in ("sender@client.test", "user@example.org", "held",
		    "Subject: hold test one"):
			check(want in s.out, "odrelayctl show: %r missing:\n%s"
			    % (want, s.out))
		check("hello held world" not in s.out,
		    "odrelayctl show (without --body) printed the body:\n" + s.out)

		st = d.ctl_ok("stats")
		check("example.org" in st.out, "stats lacks example.org:\n" + st.out)
		stj = d.ctl_ok("stats", "--json")
		try:
			json.loads(stj.out)
		except ValueError as e:
			fail("stats --json is not JSON (%s):\n%s" % (e, stj.out[:2000]))

		r = d.ctl("show", "NOSUCHID0000")
		check(r.returncode != 0, "show of a missing id exited 0")

		d.ctl_ok("delete", qid)
		j = d.queue_json()
		check(json_find(j, qid) is None, "%s still listed after delete:\n%s"
		    % (qid, json.dumps(j)[:2000]))
		q = d.ctl_ok("queue")
		check(qid not in q.out, "%s still in queue listing after delete"
		    % qid)

		# Also while the daemon is stopped (reads LMDB directly).
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["b@example.org"], b"Subject: two\r\n\r\nx\r\n")
		check(code == 250, "second message: %s %s" % (code, text))
		qid2 = queued_id(text)
		rc = d.stop()
		check(rc == 0, "SIGTERM exit status %s" % rc)
		q = d.ctl_ok("queue")
		check(qid2 in q.out, "daemon stopped: queue does not list %s:\n%s"
		    % (qid2, q.out))


def test_received_and_body():
	"""Received header added; body (dot lines, long line) kept exactly."""
	with Fixture("recv") as d:
		longline = b"L" * 1500
		msg = (b"From: a@client.test\r\nTo: u@example.org\r\n"
		    b"Subject: received test\r\nMessage-ID: <recv-1@client.test>\r\n"
		    b"\r\nfirst line\r\n.leading dot\r\n..two dots\r\n.\t\r\n"
		    + longline + b"\r\n\r\nlast line\r\n")
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["u@example.org"], msg, ehlo="helo.client.test")
		check(code == 250, "DATA: %s %s" % (code, text))
		qid = queued_id(text)
		check(qid, "no queue id in %r" % text)
		s = d.ctl_ok("show", qid)
		check("Received:" in s.out, "show: no Received header:\n" + s.out)
		rec = s.out[s.out.index("Received:"):]
		check("relay.test" in rec[:600],
		    "Received header lacks our hostname relay.test:\n" + rec[:600])
		check("helo.client.test" in rec[:600] or "127.0.0.1" in rec[:600],
		    "Received header lacks the client's name/address:\n" + rec[:600])
		body = d.body(qid)
		check(body.startswith(b"Received:"),
		    "stored message does not start with Received: %r" % body[:200])
		norm = body.replace(b"\r\n", b"\n")
		if body.endswith(msg):
			pass
		elif b"\r\n" not in body and norm.endswith(msg.replace(b"\r\n", b"\n")):
			print("note: show --body prints LF line endings")
		else:
			fail("stored body differs from what was sent:\nsent tail %r\n"
			    "stored tail %r" % (msg[-200:], body[-200:]))
		check(body.count(b"Received:") == 1,
		    "expected exactly one Received header")


if __name__ == "__main__":
	run_tests([test_swaks_queue_show_delete, test_received_and_body], "hold")
