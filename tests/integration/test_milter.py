#!/usr/bin/env python3
"""Milters (issue 10): a filter written with libmilter (testfilter.c) for
the actions rspamd and OpenDKIM do not exercise (quarantine, delete
recipient, reply codes, header changes, slow replies), a hostile scripted
milter, `milters = none` domains, and a big message through a filter.
"""

import hashlib
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, check, fail, json_find, queued_id,
    run_tests, send_message, dot_stuff)
from milters import Hostile, TestFilter

DOMAINS = """
[domain example.org]
hold = yes

[domain free.example]
hold = yes
milters = none
"""


def conf(spec, extra=""):
	"""milters = spec, timeouts of 5 s unless extra sets them."""
	keys = {"milter_command_timeout": "5s", "milter_content_timeout": "5s",
	    "milter_connect_timeout": "5s"}
	lines = []
	for l in extra.splitlines():
		k = l.split("=")[0].strip()
		if k in keys:
			keys[k] = l.split("=", 1)[1].strip()
		else:
			lines.append(l)
	return ("milters = %s\n" % spec + "".join("%s = %s\n" % kv
	    for kv in keys.items()) + "".join(l + "\n" for l in lines))


def msg(action=None, subject="milter test", extra=b""):
	h = ("From: a@client.test\r\nTo: x@example.org\r\n"
	    "Subject: %s\r\nX-Remove-Me: bye\r\n" % subject).encode()
	if action:
		h += b"X-Test-Action: " + action.encode() + b"\r\n"
	return h + b"\r\nbody line 1\r\n.dot line\r\nlast\r\n" + extra


def split(stored):
	hdrs, _, body = stored.partition(b"\r\n\r\n")
	return hdrs.split(b"\r\n"), body


def wait_for(pred, what, bound=5.0):
	deadline = time.time() + bound
	while time.time() < deadline:
		if pred():
			return
		time.sleep(0.05)
	fail("timed out waiting for " + what)


def test_header_changes():
	"""Added, inserted, changed and deleted headers are in the stored
	message, the body is untouched, and the filter saw the macros."""
	with TestFilter() as f, Fixture("milter-hdr", extra=conf(f.spec),
	    domains=DOMAINS) as d:
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], msg("headers"))
		qid = queued_id(text)
		check(code == 250 and qid, "expected 250, got %s %r" % (code, text))
		hdrs, body = split(d.body(qid))
		check(hdrs[0] == b"X-Top: first", "X-Top not first: %r" % hdrs[:3])
		check(hdrs[1].startswith(b"Received: from client.test"),
		    "our Received header not after X-Top: %r" % hdrs[:3])
		check(b"Subject: changed subject" in hdrs, "Subject not changed")
		check(not any(h.startswith(b"X-Remove-Me") for h in hdrs),
		    "X-Remove-Me not deleted")
		check(hdrs[-1] == b"X-Added: yes", "X-Added not last: %r" % hdrs)
		check(body == b"body line 1\r\n.dot line\r\nlast\r\n",
		    "body changed: %r" % body)
		wait_for(lambda: ("eom i=%s client=127.0.0.1 j=relay.test rcpts=1"
		    % qid) in f.log_text(), "the filter's eom line")
		st = d.ctl_ok("stats").out
		check("odrelay_milter_actions_total" in st and "/accept" in st,
		    "no milter action counted:\n" + st)


def test_tls_macros():
	"""A client that used STARTTLS: the filter gets {tls_version}."""
	import smtplib
	import ssl
	with TestFilter() as f, Fixture("milter-tls", extra=conf(f.spec),
	    domains=DOMAINS, tls=True) as d:
		ctx = ssl.create_default_context()
		ctx.check_hostname = False
		ctx.verify_mode = ssl.CERT_NONE
		s = smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10)
		try:
			s.ehlo("client.test")
			s.starttls(context=ctx)
			s.ehlo("client.test")
			s.sendmail("a@client.test", ["x@example.org"], msg())
			s.quit()
		finally:
			s.close()
		wait_for(lambda: re.search(r"eom i=\w+ client=127\.0\.0\.1 .*"
		    r"tls=TLSv1\.[23]", f.log_text()), "{tls_version} at the filter")


def test_rcpt_reject_and_replycode():
	"""A recipient refused with the filter's text; others accepted; a
	reply code at end of message reaches the client."""
	with TestFilter() as f, Fixture("milter-rej", extra=conf(f.spec),
	    domains=DOMAINS) as d:
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<a@client.test>")
			t = c.expect(550, "RCPT TO:<reject-me@example.org>")
			check("5.7.1 test filter refuses this recipient" in t,
			    "reply text not the filter's: %r" % t)
			c.expect(250, "RCPT TO:<x@example.org>")
			c.expect(354, "DATA")
			c.send(dot_stuff(msg("replycode")) + b".\r\n")
			t = c.expect(554, what="end of data")
			check("5.7.0 test filter rejects this message" in t,
			    "end-of-data text not the filter's: %r" % t)
			# the session goes on: the next message is accepted
			c.expect(250, "MAIL FROM:<a@client.test>")
			c.expect(250, "RCPT TO:<x@example.org>")
			c.expect(354, "DATA")
			c.send(dot_stuff(msg()) + b".\r\n")
			c.expect(250, what="second message")
			c.cmd("QUIT")
		finally:
			c.close()
		log = d.log_text()
		check(re.search(r"milter-reject: RCPT from \[127\.0\.0\.1\]: 550 5\.7\.1"
		    r".*to=<reject-me@example\.org>, milter=inet:", log),
		    "no RCPT milter-reject log line")
		check(re.search(r"[0-9A-F]{16}: milter-reject: END-OF-MESSAGE", log),
		    "no end-of-message log line keyed by queue id")
		check(len(d.queue_ids()) == 1, "expected one queued message")


def test_quarantine_release_delete():
	"""Quarantined messages are queued but held aside: odrelayctl lists,
	releases and deletes them."""
	with TestFilter() as f, Fixture("milter-q", extra=conf(f.spec),
	    domains=DOMAINS) as d:
		ids = []
		for i in range(2):
			code, text = send_message(d.smtp_port, "a@client.test",
			    ["x@example.org"], msg("quarantine", "q%d" % i))
			check(code == 250, "quarantine: %s %r" % (code, text))
			ids.append(queued_id(text))
		q = json.loads(d.ctl_ok("quarantine", "--json").out)
		for qid in ids:
			m = json_find(q, qid)
			check(m is not None and m.get("state") == "quarantined",
			    "%s not listed as quarantined: %r" % (qid, q))
		# held aside: a flush of the domain does not take it
		d.ctl("flush", "example.org")
		d.ctl_ok("release", ids[0])
		m = json_find(d.queue_json(), ids[0])
		check(m is not None and m.get("state") != "quarantined",
		    "released message still quarantined: %r" % m)
		check(json_find(json.loads(d.ctl_ok("quarantine", "--json").out),
		    ids[0]) is None, "released message still in quarantine list")
		r = d.ctl("release", ids[0])
		check(r.returncode != 0, "releasing twice succeeded")
		d.ctl_ok("delete", ids[1])
		check(ids[1] not in d.queue_ids(), "deleted message still queued")
		check("quarantined: held by the test filter" in d.log_text(),
		    "no quarantine log line")


def test_discard_tempfail_skip():
	"""discard: 250 but nothing queued; tempfail at end of message: 451;
	skip: no more body chunks; progress: the wait goes on."""
	with TestFilter() as f, Fixture("milter-disc", extra=conf(f.spec),
	    domains=DOMAINS) as d:
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], msg("discard"))
		check(code == 250, "discard: expected 250, got %s %r" % (code, text))
		check(len(d.queue_ids()) == 0, "a discarded message was queued")
		check("milter-discard" in d.log_text(), "no discard log line")
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], msg("tempfail"))
		check(code == 451, "tempfail: expected 451, got %s %r" % (code, text))
	with Hostile(["skip"]) as h, Fixture("milter-skip", extra=conf(h.spec,
	    "milter_content_timeout = 1s\n"), domains=DOMAINS) as d:
		big = msg(extra=b"z" * 300000 + b"\r\n")
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], big)
		check(code == 250, "skip/progress: %s %r" % (code, text))
		check(h.body_after_skip == 0, "%d body chunks sent after skip"
		    % h.body_after_skip)
		stored = d.body(queued_id(text))
		check(stored.endswith(big.partition(b"\r\n\r\n")[2]),
		    "message altered")


def test_unix_socket():
	"""A filter on a unix socket (milters = unix:/path)."""
	with TestFilter(unix=True) as f, Fixture("milter-unix",
	    extra=conf(f.spec), domains=DOMAINS) as d:
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], msg("headers"))
		qid = queued_id(text)
		check(code == 250 and qid, "unix socket: %s %r" % (code, text))
		check(b"X-Added: yes" in d.body(qid), "no header from the filter")


def test_delete_recipient():
	"""A recipient deleted by the filter is not queued; the others are."""
	with TestFilter() as f, Fixture("milter-del", extra=conf(f.spec),
	    domains=DOMAINS) as d:
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org", "y@example.org"],
		    msg("delrcpt <y@example.org>"))
		qid = queued_id(text)
		check(code == 250 and qid, "delrcpt: %s %r" % (code, text))
		m = json_find(d.queue_json(), qid)
		s = json.dumps(m)
		check("x@example.org" in s and "y@example.org" not in s,
		    "recipients after delrcpt: %s" % s)


def test_slow_and_timeouts():
	"""A slow answer within the timeout is waited for; one past
	milter_content_timeout gives the default action (tempfail) for that
	message only; the next message is filtered again."""
	with TestFilter() as f, Fixture("milter-slow", extra=conf(f.spec,
	    "milter_content_timeout = 1s\n"), domains=DOMAINS) as d:
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["slow-rcpt@example.org"], msg())
		check(code == 250, "slow RCPT answer: %s %r" % (code, text))
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], msg("slow 3"))
		check(code == 451 and "4.7.1" in text,
		    "timeout at end of data: expected 451 4.7.1, got %s %r"
		    % (code, text))
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], msg())
		check(code == 250, "after a timeout: %s %r" % (code, text))
		check("milter inet:127.0.0.1:%d: timeout" % f.port in d.log_text(),
		    "no timeout log line")


def test_milters_none():
	"""Mail only for a `milters = none` domain never touches the filter
	(even when it is down); a filtered domain gets the default action."""
	with TestFilter() as f:
		spec = f.spec
	# the filter is stopped now: its port refuses connections
	with Fixture("milter-none", extra=conf(spec), domains=DOMAINS) as d:
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@free.example"], msg())
		check(code == 250, "milters = none domain: %s %r" % (code, text))
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<a@client.test>")
			t = c.expect(451, "RCPT TO:<x@example.org>")
			check("4.7.1" in t, "default action text: %r" % t)
			# refused there, the message is for the free domain only:
			# it is not filtered (the filter is down) and is accepted
			c.expect(250, "RCPT TO:<y@free.example>")
			c.expect(354, "DATA")
			c.send(dot_stuff(msg()) + b".\r\n")
			t = c.expect(250, what="message for the free domain only")
		finally:
			c.close()
		check(queued_id(t) in d.queue_ids(), "message not queued")


def test_hostile():
	"""Garbage, a 4 GiB length, no answer, a close in mid-body, a flood
	of header changes: each gives milter_default_action for that message
	only; the daemon keeps running and what was acknowledged stays
	queued."""
	modes = ["garbage", "huge", "silent", "close-body", "flood", "good"]
	with Hostile(modes) as h, Fixture("milter-hostile", extra=conf(h.spec,
	    "milter_command_timeout = 1s\nmilter_content_timeout = 1s\n"),
	    domains=DOMAINS) as d:
		acked = []
		for i, mode in enumerate(modes):
			c = Conn(d.smtp_port)
			try:
				c.greet_ehlo()
				c.expect(250, "MAIL FROM:<a@client.test>")
				code, t = c.cmd("RCPT TO:<x@example.org>")
				if mode in ("close-body", "flood", "good"):
					check(code == 250, "%s: RCPT %s %r" % (mode, code, t))
					c.expect(354, "DATA")
					c.send(dot_stuff(msg(subject=mode,
					    extra=b"y" * 200000 + b"\r\n")) + b".\r\n")
					code, t = c.reply()
				want = 250 if mode == "good" else 451
				check(code == want, "%s: expected %d, got %s %r"
				    % (mode, want, code, t))
				if code == 250:
					acked.append(queued_id(t))
				c.cmd("QUIT")
			finally:
				c.close()
			check(d.running(), "odrelayd died after %s" % mode)
		check(h.seen[:len(modes)] == modes, "filter connections: %r"
		    % h.seen)
		check("too many modifications" in d.log_text(),
		    "the header flood was not stopped")
		check(set(acked) <= d.queue_ids() and len(acked) == 1,
		    "acknowledged mail missing: %r vs %r" % (acked, d.queue_ids()))
	# milter_default_action = accept: the message goes through
	with Hostile(["garbage"]) as h, Fixture("milter-hostile-acc",
	    extra=conf(h.spec, "milter_default_action = accept\n"),
	    domains=DOMAINS) as d:
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], msg())
		check(code == 250 and queued_id(text) in d.queue_ids(),
		    "default accept: %s %r" % (code, text))


def rss_anon(pid):
	with open("/proc/%d/status" % pid) as f:
		for line in f:
			if line.startswith("RssAnon:"):
				return int(line.split()[1]) * 1024
	return 0


def plain_build():
	"""The memory figure means something only for a plain binary: not a
	valgrind wrapper script, not an ASan build (its quarantine keeps
	freed memory)."""
	from odtest import prog
	with open(prog("odrelayd"), "rb") as f:
		data = f.read()
	return not data.startswith(b"#!") and b"__asan_init" not in data


def test_big_message_bounded():
	"""A 40 MB message through a filter: stored intact, and the daemon's
	anonymous memory stays far below the message size (plain builds)."""
	with TestFilter("accept") as f, Fixture("milter-big", extra=conf(f.spec,
	    "max_message_size = 200M\n"), domains=DOMAINS) as d:
		line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
		data = (b"From: a@client.test\r\nSubject: big\r\n\r\n"
		    + line * (40 * 1024 * 1024 // len(line)))
		peak = [0]
		stop = [False]

		def sample():
			while not stop[0]:
				try:
					peak[0] = max(peak[0], rss_anon(d.proc.pid))
				except OSError:
					pass
				time.sleep(0.02)
		base = rss_anon(d.proc.pid)
		t = threading.Thread(target=sample, daemon=True)
		t.start()
		try:
			code, text = send_message(d.smtp_port, "a@client.test",
			    ["x@example.org"], data)
		finally:
			stop[0] = True
			t.join()
		qid = queued_id(text)
		check(code == 250 and qid, "big message: %s %r" % (code, text))
		stored = d.body(qid)
		_, body = split(stored)
		check(hashlib.sha256(body).digest() ==
		    hashlib.sha256(data.partition(b"\r\n\r\n")[2]).digest(),
		    "big message body altered")
		grown = peak[0] - base
		if plain_build():
			check(grown < 16 * 1024 * 1024, "anonymous memory grew by %d "
			    "bytes for a 40 MB message" % grown)


def test_reuse():
	"""milter_reuse = yes: later SMTP sessions reuse the filter connection
	(UNKNOWN, QUIT_NC, CONNECT) and the filter sees each session afresh:
	its macros, a reject at RCPT, header changes, a tempfail; the same
	with a filter that asked for no replies before the end of message."""
	with TestFilter() as f, Fixture("milter-reuse", extra=conf(f.spec,
	    "milter_reuse = yes\n"), domains=DOMAINS) as d:
		qids = []
		for i in range(3):
			code, text = send_message(d.smtp_port, "a@client.test",
			    ["x@example.org"], msg(subject="reuse %d" % i))
			check(code == 250, "session %d: %s %r" % (i, code, text))
			qids.append(queued_id(text))
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<a@client.test>")
			t = c.expect(550, "RCPT TO:<reject-me@example.org>")
			check("test filter refuses" in t, "RCPT reject on a reused "
			    "connection: %r" % t)
			c.cmd("QUIT")
		finally:
			c.close()
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], msg("headers"))
		check(code == 250, "headers: %s %r" % (code, text))
		check(b"X-Added: yes" in d.body(queued_id(text)),
		    "no header change on a reused connection")
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org"], msg("tempfail"))
		check(code == 451, "tempfail: %s %r" % (code, text))
		code, text = send_message(d.smtp_port, "a@client.test",
		    ["x@example.org", "y@example.org"], msg())
		check(code == 250, "after a tempfail: %s %r" % (code, text))
		n = d.log_text().count("connection reused")
		check(n >= 5, "filter connection reused %d times, expected 6" % n)
		wait_for(lambda: f.log_text().count("eom ") >= 6, "6 eom lines")
		log = f.log_text()
		for q in qids:
			check("eom i=%s client=127.0.0.1 j=" % q in log and
			    "rcpts=1" in log, "macros on a reused connection: %s"
			    % log)
		check("rcpts=2" in log, "recipient count not reset: %s" % log)
	with TestFilter("accept-nr") as f, Fixture("milter-reuse-nr",
	    extra=conf(f.spec, "milter_reuse = yes\n"), domains=DOMAINS) as d:
		for i in range(3):
			code, text = send_message(d.smtp_port, "a@client.test",
			    ["x@example.org"], msg(subject="nr %d" % i))
			check(code == 250, "accept-nr %d: %s %r" % (i, code, text))
		n = d.log_text().count("connection reused")
		check(n >= 2, "accept-nr: reused %d times, expected 2" % n)
		wait_for(lambda: f.log_text().count("eom ") >= 3, "3 eom lines")


if __name__ == "__main__":
	run_tests([test_header_changes, test_tls_macros,
	    test_rcpt_reject_and_replycode,
	    test_quarantine_release_delete, test_discard_tempfail_skip,
	    test_unix_socket, test_delete_recipient,
	    test_slow_and_timeouts, test_milters_none, test_hostile,
	    test_big_message_bounded, test_reuse], "milter")
