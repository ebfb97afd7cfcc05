#!/usr/bin/env python3
"""Push delivery: the XWAIT extension on the ODMR listener, odpull --watch,
arrival webhooks (issue 12)."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import Conn, check, fail, run_tests
from pullsink import (PullFixture, Sink, add_user, odmr_login, reverse_serve,
    sample_message, submit, wait_queue)

DOMAINS = """
[domain example.org]
hold = yes

[domain other.example]
hold = yes
"""


def daemon(name, extra="", tls=False):
	return PullFixture(name, extra=extra, domains=DOMAINS, tls=tls,
	    start=False)


def users(d):
	add_user(d, "demo", "demo", "example.org")
	add_user(d, "other", "other-secret", "other.example")
	d.start()


def login(d, user="demo", password="demo"):
	c, code, text = odmr_login(d.odmr_port, user, password)
	check(code == 235, "AUTH %s: %s %r" % (user, code, text))
	return c


def queue_empty(j):
	return not j.get("messages")


def start_wait(c, arg=""):
	"""Send XWAIT; check that no answer comes at once (the session waits)."""
	c.send("XWAIT%s\r\n" % ((" " + arg) if arg else ""))
	early = c.pending(0.3)
	check(early == b"", "XWAIT with no mail answered at once: %r\n%s"
	    % (early, c.dump()))


# --- the extension, scripted -------------------------------------------------

def test_xwait_protocol():
	with daemon("push-proto", extra="odmr_wait_timeout = 2s") as d, \
	    Sink() as sink:
		users(d)
		c = Conn(d.odmr_port)
		t = c.greet_ehlo("customer.test")
		check("XWAIT" in [x[4:].upper() for x in t.splitlines()],
		    "no XWAIT keyword in EHLO:\n" + t)
		# Before AUTH: 530.
		c.expect(530, "XWAIT")
		c.expect(530, "XWAIT example.org")
		c = login(d)
		# A domain the user may not pull: 450, like ATRN.
		c.expect(450, "XWAIT other.example")
		c.expect(450, "XWAIT example.org,other.example")
		c.expect(501, "XWAIT not_a_domain")
		# No mail: the wait ends with 453 after odmr_wait_timeout, and
		# the client may wait again.
		start_wait(c)
		t0 = time.time()
		c.expect(453, what="end of an empty wait")
		check(time.time() - t0 < 8, "453 took %.1f s" % (time.time() - t0))
		start_wait(c, "example.org")
		t0 = time.time()
		submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("proto1"))
		c.expect(250, what="XWAIT woken by arrival")
		print("    XWAIT wake-up %.0f ms after the sender's 250" % (
		    (time.time() - t0) * 1000))
		# ATRN in the same session, the reversed session as usual.
		c.expect(250, "ATRN")
		try:
			reverse_serve(c, sink)
		finally:
			c.close()
		check(len(sink.delivered()) == 1, "sink got %d messages"
		    % len(sink.delivered()))
		wait_queue(d, queue_empty, "empty after the pull")
		# Mail held already: 250 at once, and a pipelined ATRN follows.
		submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("proto2"))
		c = login(d)
		c.send("XWAIT\r\nATRN\r\n")
		c.expect(250, what="XWAIT with mail held")
		c.expect(250, what="pipelined ATRN")
		try:
			reverse_serve(c, sink)
		finally:
			c.close()
		check(len(sink.delivered()) == 2, "sink got %d messages"
		    % len(sink.delivered()))


def test_xwait_quit_and_garbage():
	with daemon("push-bad", extra="smtp_timeout = 2s\n"
	    "odmr_wait_timeout = 4s") as d:
		users(d)
		# QUIT while waiting: 453 for the wait, 221 for QUIT.
		c = login(d)
		start_wait(c)
		c.expect(453, "QUIT", what="QUIT while waiting")
		c.expect(221, what="QUIT while waiting")
		c.close()
		# Anything else while waiting: 421 and the connection closes.
		c = login(d)
		start_wait(c)
		c.expect(421, "NOOP", what="garbage while waiting")
		check(c.pending(2.0) == b"", "connection not closed after 421")
		c.close()
		c = login(d)
		start_wait(c)
		c.send(b"\x00\xff\xfegarbage\r\n")
		code, text = c.reply()
		check(code == 421,
		    "binary garbage while waiting: %s %r" % (code, text))
		c.close()
		# Pipelined commands after an XWAIT that waits: the session is
		# closed with 421 (only QUIT may follow before the answer).
		c = login(d)
		c.send("XWAIT\r\nATRN\r\n")
		c.expect(421, what="ATRN pipelined after a waiting XWAIT")
		c.close()
		# smtp_timeout (2 s) does not apply to the wait (4 s).
		c = login(d)
		start_wait(c)
		t0 = time.time()
		c.expect(453, what="wait longer than smtp_timeout")
		check(time.time() - t0 > 2.5, "wait ended after %.1f s (smtp_timeout "
		    "applied?)" % (time.time() - t0))
		c.expect(221, "QUIT")
		c.close()
		check(d.running(), "daemon died")


def test_many_waiting_one_address():
	per_ip = 5
	n = per_ip + 10
	with daemon("push-many", extra="max_connections_per_ip = %d\n"
	    "max_waiting = %d" % (per_ip, n)) as d:
		users(d)
		waiting = []
		try:
			for i in range(n):
				c = login(d)
				start_wait(c)
				waiting.append(c)
			# One more waiter is over max_waiting: 452.
			c = login(d)
			c.expect(452, "XWAIT")
			c.close()
			# Non-waiting sessions still count against the per-IP
			# limit as before.
			extra = [Conn(d.odmr_port) for _ in range(per_ip)]
			for x in extra:
				x.expect(220, what="greeting")
			over = Conn(d.odmr_port)
			over.expect(421, what="connection over max_connections_per_ip")
			over.close()
			for x in extra:
				x.close()
			submit(d.smtp_port, "s@client.test", ["user@example.org"],
			    sample_message("many"))
			for c in waiting:
				c.expect(250, what="every waiter woken")
		finally:
			for c in waiting:
				c.close()


TESTS = [
	test_xwait_protocol,
	test_xwait_quit_and_garbage,
	test_many_waiting_one_address,
]

if __name__ == "__main__":
	run_tests(TESTS, "push")
