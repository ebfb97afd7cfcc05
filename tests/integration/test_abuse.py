#!/usr/bin/env python3
"""Abuse limits: slow clients time out without starving others, the
per-address connection cap, AUTH guessing slowed then refused, ETRN and
ATRN rate limits, the recipient cap."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, check, dot_stuff, json_messages,
    queued_id, run_tests)
from pullsink import add_user, cram_response, msg_rcpts

TIMEOUT = 3	# smtp_timeout in these tests


def conn_from(port, src, timeout=10.0):
	"""Conn from a chosen loopback source address (127.0.0.0/8)."""
	c = Conn.__new__(Conn)
	c.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
	c.s.settimeout(timeout)
	c.s.bind((src, 0))
	c.s.connect(("127.0.0.1", port))
	c.buf = b""
	c.transcript = []
	return c


def send_one(port, src="127.0.0.1", tag="normal"):
	"""One message; returns (code, seconds taken)."""
	t0 = time.time()
	c = conn_from(port, src)
	try:
		c.greet_ehlo("client.test")
		c.expect(250, "MAIL FROM:<s@client.test>")
		c.expect(250, "RCPT TO:<u@example.org>")
		c.expect(354, "DATA")
		c.send(dot_stuff(b"Subject: " + tag.encode() + b"\r\n\r\nhi\r\n")
		    + b".\r\n")
		code, text = c.reply()
		c.cmd("QUIT")
		return code, time.time() - t0
	finally:
		c.close()


def closed_within(c, bound):
	"""Seconds until the server closed c (None if still open at bound)."""
	t0 = time.time()
	c.s.settimeout(0.2)
	while time.time() - t0 < bound:
		try:
			d = c.s.recv(4096)
		except socket.timeout:
			continue
		except OSError:
			return time.time() - t0
		if not d:
			return time.time() - t0
	return None


class Trickler(threading.Thread):
	"""A client that sends one byte every interval seconds and records
	when the server hung up on it."""

	def __init__(self, port, src, interval, bound):
		super().__init__(daemon=True)
		self.port, self.src = port, src
		self.interval, self.bound = interval, bound
		self.closed_after = None
		self.error = None

	def run(self):
		try:
			c = conn_from(self.port, self.src)
		except OSError as e:
			self.error = "connect: %s" % e
			return
		try:
			c.s.settimeout(5)
			line = c.readline()
			if line is None or not line.startswith("220"):
				self.error = "greeting %r" % line
				return
			data = b"NOOP " + b"x" * 200 + b"\r\n"
			t0 = time.time()
			c.s.settimeout(self.interval)
			for i in range(len(data)):
				if time.time() - t0 > self.bound:
					return
				try:
					c.s.send(data[i:i + 1])
				except OSError:
					self.closed_after = time.time() - t0
					return
				# Wait one interval, watching for the server's close.
				end = time.time() + self.interval
				while time.time() < end:
					c.s.settimeout(max(0.05, end - time.time()))
					try:
						d = c.s.recv(4096)
					except socket.timeout:
						break
					except OSError:
						d = b""
					if not d:
						self.closed_after = time.time() - t0
						return
		finally:
			c.close()


def slow_clients(interval, n=20):
	"""n clients (each from its own address) sending one byte every
	interval seconds; a normal client must be served meanwhile, and
	every slow one dropped within 3 x smtp_timeout."""
	bound = 3 * TIMEOUT + 2
	with Fixture("abuse-slow", extra="smtp_timeout = %ds\n" % TIMEOUT) as d:
		ts = [Trickler(d.smtp_port, "127.0.0.%d" % (10 + i), interval,
		    bound + 3) for i in range(n)]
		for t in ts:
			t.start()
		time.sleep(1.0)
		code, took = send_one(d.smtp_port)
		check(code == 250 and took < 2.0, "normal client while %d slow "
		    "ones are connected: %s after %.1f s" % (n, code, took))
		for t in ts:
			t.join(bound + 6)
		errs = [t.error for t in ts if t.error]
		check(not errs, "slow clients: %r" % errs[:3])
		kept = [t.src for t in ts if t.closed_after is None]
		late = [round(t.closed_after, 1) for t in ts
		    if t.closed_after is not None and t.closed_after > bound]
		print("  slow clients (1 byte / %.1f s) closed after: %s" % (interval,
		    sorted(round(t.closed_after, 1) for t in ts
		    if t.closed_after is not None)))
		check(not kept and not late, "%d of %d slow clients still connected "
		    "after %d s (smtp_timeout %d s)%s" % (len(kept) + len(late), n,
		    bound, TIMEOUT, "; closed late: %r" % late if late else ""))
		code, took = send_one(d.smtp_port)
		check(code == 250, "normal client afterwards: %s" % code)
		check(d.running(), "odrelayd died")


def test_slow_clients_idle():
	"""One byte every 4 s: each pause exceeds smtp_timeout."""
	slow_clients(4.0)


def test_slow_clients_trickle():
	"""One byte every 2 s: never idle for smtp_timeout, but a command
	line must not take forever (slowloris)."""
	slow_clients(2.0)


def test_connection_flood():
	cap = 5
	with Fixture("abuse-flood", extra="max_connections_per_ip = %d\n"
	    % cap) as d:
		held = []
		for i in range(cap):
			c = conn_from(d.smtp_port, "127.0.0.1")
			c.expect(220, what="greeting %d" % i)
			held.append(c)
		for i in range(10):
			c = conn_from(d.smtp_port, "127.0.0.1")
			code, text = c.reply()
			check(code == 421, "connection %d over the cap: %s %r"
			    % (cap + i + 1, code, text))
			check(closed_within(c, 3) is not None,
			    "refused connection left open")
			c.close()
		# Another address is not affected.
		code, took = send_one(d.smtp_port, "127.0.0.2")
		check(code == 250, "other address during the flood: %s" % code)
		for c in held:
			c.expect(221, "QUIT")
			c.close()
		time.sleep(0.5)
		code, took = send_one(d.smtp_port)
		check(code == 250, "same address after the flood: %s" % code)


def test_connection_flood_odmr():
	"""The per-address cap holds on the ODMR port too: one address must
	not take every ATRN slot from the other customers."""
	cap = 5
	with Fixture("abuse-flood-odmr", extra="max_connections_per_ip = %d\n"
	    % cap) as d:
		held = []
		try:
			for i in range(cap):
				c = conn_from(d.odmr_port, "127.0.0.1")
				c.expect(220, what="ODMR greeting %d" % i)
				held.append(c)
			codes = []
			for i in range(5):
				c = conn_from(d.odmr_port, "127.0.0.1")
				held.append(c)
				code, text = c.reply()
				codes.append(code)
			check(all(x == 421 for x in codes), "ODMR connections over "
			    "max_connections_per_ip = %d: %r (want 421)" % (cap, codes))
			c = conn_from(d.odmr_port, "127.0.0.2")
			c.expect(220, what="ODMR greeting from another address")
			c.close()
		finally:
			for c in held:
				c.close()


# --- AUTH guessing on the ODMR port --------------------------------------------

def auth_try(d, password, src="127.0.0.1"):
	"""One CRAM-MD5 attempt on a new connection: (code, seconds for the
	answer to the client's response)."""
	c = conn_from(d.odmr_port, src, timeout=30)
	try:
		c.greet_ehlo("customer.test")
		code, text = c.cmd("AUTH CRAM-MD5")
		if code != 334:
			return code, 0.0
		t0 = time.time()
		code, text = c.cmd(cram_response("demo", password, text[4:]))
		return code, time.time() - t0
	finally:
		c.close()


def test_auth_guessing():
	with Fixture("abuse-auth", start=False,
	    domains="[domain example.org]\nhold = yes\n") as d:
		add_user(d, "demo", "right-one", "example.org")
		d.start()
		# The customer's usual address (issue 17.4: failures also count
		# per user; an address the user logged in from stays usable).
		code, took = auth_try(d, "right-one", "127.0.0.2")
		check(code == 235, "right password before the guesses: %s" % code)
		delays = []
		for i in range(4):
			code, took = auth_try(d, "guess%d" % i)
			check(code == 535, "wrong password %d: %s" % (i + 1, code))
			delays.append(took)
		print("  delays of failures 1-4: %s" % [round(x, 1) for x in delays])
		for a, b in zip(delays, delays[1:]):
			check(b > a * 1.5, "delays do not grow: %r" % delays)
		# More guesses in parallel: each still slowed, and others are
		# served meanwhile.
		res = []

		def guess(i):
			res.append(auth_try(d, "par%d" % i))
		ts = [threading.Thread(target=guess, args=(i,)) for i in range(6)]
		for t in ts:
			t.start()
		time.sleep(1.0)
		code, took = send_one(d.smtp_port)
		check(code == 250 and took < 2.0, "SMTP client during AUTH delays: "
		    "%s after %.1f s" % (code, took))
		for t in ts:
			t.join(40)
		check(len(res) == 6 and all(c == 535 for c, _ in res),
		    "parallel guesses: %r" % res)
		check(min(t for _, t in res) >= delays[-1],
		    "parallel guesses answered faster: %r" % res)
		# Now capped: refused before any challenge, even the right
		# password.
		for pw in ("another-guess", "right-one"):
			code, took = auth_try(d, pw)
			check(code == 454, "AUTH after %d failures: %s (want 454)"
			    % (4 + 6, code))
		# The user's own address is unaffected ...
		code, took = auth_try(d, "right-one", "127.0.0.2")
		check(code == 235, "right password from the user's address: %s"
		    % code)
		# ... but the user's password is not even checked from a new
		# one: the guesses counted against the user too.
		code, took = auth_try(d, "right-one", "127.0.0.3")
		check(code == 535, "right password from a new address after 10 "
		    "failures for the user: %s (want 535)" % code)


# --- ETRN / ATRN rate limits ---------------------------------------------------

def avoid_minute_edge(need):
	"""The limits count per calendar minute: start a burst early in one."""
	left = 60 - time.time() % 60
	if left < need:
		time.sleep(left + 0.2)


def test_etrn_flood():
	rate = 3
	with Fixture("abuse-etrn", extra="etrn_rate = %d\n" % rate) as d:
		avoid_minute_edge(8)
		c = conn_from(d.smtp_port, "127.0.0.1")
		c.greet_ehlo("customer.test")
		codes = [c.cmd("ETRN example.org")[0] for _ in range(rate + 3)]
		check(all(x in (250, 251, 253) for x in codes[:rate]),
		    "ETRN within the rate: %r" % codes)
		check(all(x == 458 for x in codes[rate:]),
		    "ETRN over the rate (%d/min): %r (want 458)" % (rate, codes))
		c.expect(221, "QUIT")
		c.close()
		# Per client address: another one may still ask.
		c = conn_from(d.smtp_port, "127.0.0.2")
		c.greet_ehlo("customer.test")
		c.expect(251, "ETRN example.org")
		c.close()


def test_atrn_flood():
	rate = 3
	with Fixture("abuse-atrn", start=False, extra="atrn_rate = %d\n" % rate,
	    domains="[domain example.org]\nhold = yes\n"
	    "[domain other.example]\nhold = yes\n") as d:
		add_user(d, "demo", "pw-demo", "example.org")
		add_user(d, "other", "pw-other", "other.example")
		d.start()
		avoid_minute_edge(8)

		def login(user, pw):
			c = conn_from(d.odmr_port, "127.0.0.1")
			c.greet_ehlo("customer.test")
			chal = c.expect(334, "AUTH CRAM-MD5")[4:]
			c.expect(235, cram_response(user, pw, chal))
			return c
		c = login("demo", "pw-demo")
		codes = [c.cmd("ATRN example.org")[0] for _ in range(rate + 2)]
		c.close()
		c = login("demo", "pw-demo")
		codes.append(c.cmd("ATRN")[0])
		c.close()
		check(all(x == 453 for x in codes[:rate]), "ATRN within the rate: %r"
		    % codes)
		check(all(x == 450 for x in codes[rate:]),
		    "ATRN over the rate (%d/min): %r (want 450)" % (rate, codes))
		c = login("other", "pw-other")
		c.expect(453, "ATRN other.example")
		c.close()


def test_rcpt_flood():
	cap = 5
	with Fixture("abuse-rcpt", extra="max_recipients = %d\n" % cap) as d:
		c = Conn(d.smtp_port)
		c.greet_ehlo("client.test")
		c.expect(250, "MAIL FROM:<s@client.test>")
		replies = [c.cmd("RCPT TO:<u%d@example.org>" % i) for i in range(cap + 20)]
		codes = [r[0] for r in replies]
		check(codes[:cap] == [250] * cap, "RCPTs within the cap: %r" % codes)
		over = replies[cap:]
		check(all(x == 452 and "4.5.3" in t for x, t in over),
		    "RCPTs over max_recipients: %r" % over[:3])
		c.expect(354, "DATA")
		c.send(b"Subject: many\r\n\r\nhi\r\n.\r\n")
		text = c.expect(250)
		c.cmd("QUIT")
		c.close()
		qid = queued_id(text)
		m = [x for x in json_messages(d.queue_json()) if x["id"] == qid]
		check(len(m) == 1 and msg_rcpts(m[0]) == sorted("u%d@example.org" % i
		    for i in range(cap)), "queued: %r" % m)


if __name__ == "__main__":
	run_tests([
		test_connection_flood,
		test_connection_flood_odmr,
		test_rcpt_flood,
		test_etrn_flood,
		test_atrn_flood,
		test_slow_clients_idle,
		test_slow_clients_trickle,
		test_auth_guessing,
	], "abuse")
