#!/usr/bin/env python3
"""Hostile peers (issue 17, items 7 and 12): peers that trickle their
bytes are cut off at a deadline, on the delivery side (a receiving server
reached by ETRN, a customer in the reversed ATRN session) and on both
listeners; a final 250 that comes with the TLS close_notify is not lost.

The peers are scripted here on raw sockets; timeouts are configured short
(2 s) and each check allows generous slack."""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import Conn, Fixture, check, free_port, json_ids, run_tests
from pullsink import (Sink, add_user, odmr_login, reverse_serve, submit,
    sample_message, wait_queue)

TIMEOUT = 2		# delivery_timeout and smtp_timeout in these tests
BOUND = 3 * TIMEOUT + 3	# a trickler must be gone by then
TRICKLE = 0.4		# seconds between two bytes: never idle for TIMEOUT
EXTRA = "delivery_timeout = %ds\nsmtp_timeout = %ds\n" % (TIMEOUT, TIMEOUT)


def domain(name, port):
	return "\n[domain %s]\nhold = yes\nroute = [127.0.0.1]:%d\n" % (name, port)


class Server(threading.Thread):
	"""A listening socket on 127.0.0.1; each connection runs
	handler(sock, server) in its own thread."""

	def __init__(self, handler):
		super().__init__(daemon=True)
		self.handler = handler
		self.port = free_port()
		self.ls = socket.socket()
		self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		self.ls.bind(("127.0.0.1", self.port))
		self.ls.listen(8)
		self.ls.settimeout(0.2)
		self.stopping = False
		self.connections = 0
		self.closed_after = []	# seconds from accept to the peer's close
		self.messages = 0	# end-of-data answered 250
		self.errors = []
		self.lock = threading.Lock()

	def run(self):
		while not self.stopping:
			try:
				c, _ = self.ls.accept()
			except socket.timeout:
				continue
			except OSError:
				return
			with self.lock:
				self.connections += 1
			threading.Thread(target=self._one, args=(c,), daemon=True).start()

	def _one(self, c):
		try:
			c.settimeout(20)
			self.handler(c, self)
		except Exception as e:	# reported by the test, not lost
			with self.lock:
				self.errors.append(repr(e))
		finally:
			try:
				c.close()
			except OSError:
				pass

	def stop(self):
		self.stopping = True
		self.ls.close()

	def __enter__(self):
		self.start()
		return self

	def __exit__(self, *a):
		self.stop()
		return False


def trickle(c, data, bound=BOUND + 6):
	"""Send data one byte every TRICKLE seconds, repeating it; return the
	seconds until the peer closed, or None if it was still there at
	bound."""
	t0 = time.time()
	i = 0
	while time.time() - t0 < bound:
		try:
			c.send(data[i % len(data):i % len(data) + 1])
		except OSError:
			return time.time() - t0
		i += 1
		end = time.time() + TRICKLE
		while time.time() < end:
			c.settimeout(max(0.05, end - time.time()))
			try:
				d = c.recv(4096)
			except socket.timeout:
				break
			except OSError:
				d = b""
			if not d:
				return time.time() - t0
	return None


def readline(c, buf):
	while b"\r\n" not in buf[0]:
		d = c.recv(4096)
		if not d:
			return None
		buf[0] += d
	line, buf[0] = buf[0].split(b"\r\n", 1)
	return line


def etrn(d, dom):
	c = Conn(d.smtp_port)
	try:
		c.greet_ehlo()
		code, text = c.cmd("ETRN " + dom)
		c.cmd("QUIT")
		return code
	finally:
		c.close()


def queued(d, qid):
	return qid in set(json_ids(d.queue_json()))


# --- delivery side: a receiving server that trickles -----------------------

def trickling_server(stage):
	"""A server that trickles an endless reply at stage ("greeting" or
	"mail") and records when odrelayd hung up."""

	def handler(c, srv):
		buf = [b""]
		if stage == "greeting":
			t = trickle(c, b"220-trickle.test slow\r\n")
		else:
			c.sendall(b"220 trickle.test ESMTP\r\n")
			t = None
			while True:
				line = readline(c, buf)
				if line is None:
					break
				verb = line[:4].upper()
				if verb in (b"EHLO", b"HELO"):
					c.sendall(b"250 trickle.test\r\n")
				elif verb == b"MAIL":
					t = trickle(c, b"250-slow\r\n")
					break
				else:
					c.sendall(b"250 ok\r\n")
		with srv.lock:
			srv.closed_after.append(t)
	return handler


def delivery_trickle(stage):
	with Server(trickling_server(stage)) as srv, \
	    Fixture("hostile-smtpc-" + stage, extra=EXTRA,
	    domains=domain("trickle.test", srv.port)) as d:
		qid = submit(d.smtp_port, "s@client.test", ["u@trickle.test"],
		    sample_message("trickle"))
		check(etrn(d, "trickle.test") in (250, 253), "ETRN refused")
		t0 = time.time()
		while not srv.closed_after and time.time() - t0 < BOUND + 10:
			time.sleep(0.1)
		check(srv.closed_after, "the trickling server saw no session end")
		t = srv.closed_after[0]
		print("  server trickling its %s reply: cut off after %s s"
		    % (stage, None if t is None else round(t, 1)))
		check(t is not None and t <= BOUND, "a server trickling its %s "
		    "reply (1 byte / %.1f s) kept the delivery for %s s "
		    "(delivery_timeout %d s)" % (stage, TRICKLE,
		    "over %d" % (BOUND + 6) if t is None else round(t, 1), TIMEOUT))
		check(not srv.errors, "server: %r" % srv.errors)
		time.sleep(0.5)
		check(queued(d, qid), "the message left the queue although it "
		    "was never accepted")
		check("timeout" in d.log_text(), "no timeout in the log")


def test_smtpc_trickled_greeting():
	delivery_trickle("greeting")


def test_smtpc_trickled_mail_reply():
	delivery_trickle("mail")


# --- delivery side: an ATRN customer that trickles its greeting -------------

def test_atrn_customer_trickles():
	"""After ATRN the customer is the server; one that trickles its 220
	is cut off, its lease is released, and a proper pull gets the mail."""
	with Fixture("hostile-atrn", extra=EXTRA, start=False) as d, \
	    Sink() as sink:
		add_user(d, "demo", "demo", "example.org")
		d.start()
		qid = submit(d.smtp_port, "s@client.test", ["u@example.org"],
		    sample_message("atrn-trickle"))
		c, code, text = odmr_login(d.odmr_port)
		check(code == 235, "AUTH: %s %s" % (code, text))
		c.expect(250, "ATRN example.org")
		t = trickle(c.s, b"220-customer.test slow\r\n")
		c.close()
		print("  customer trickling its 220: cut off after %s s"
		    % (None if t is None else round(t, 1)))
		check(t is not None and t <= BOUND, "a customer trickling its "
		    "greeting (1 byte / %.1f s) kept the reversed session for %s s "
		    "(delivery_timeout %d s)" % (TRICKLE, "over %d" % (BOUND + 6)
		    if t is None else round(t, 1), TIMEOUT))
		check(queued(d, qid), "message gone after an aborted pull")
		# The lease is free again: a proper pull gets the message.
		c, code, text = odmr_login(d.odmr_port)
		check(code == 235, "AUTH again: %s %s" % (code, text))
		c.expect(250, "ATRN example.org", what="second ATRN (lease "
		    "released?)")
		reverse_serve(c, sink)
		c.close()
		check(sink.delivered_rcpts() == ["u@example.org"],
		    "second pull delivered %r" % sink.delivered_rcpts())
		wait_queue(d, lambda j: qid not in set(json_ids(j)),
		    "message gone after the pull")


# --- both listeners: a client that trickles ---------------------------------

def listener_trickle(port_attr, prelude, data, what):
	with Fixture("hostile-listen", extra=EXTRA) as d:
		c = Conn(getattr(d, port_attr))
		c.expect(220, what="greeting")
		for line, code in prelude:
			c.expect(code, line)
		t = trickle(c.s, data)
		c.close()
		print("  %s: cut off after %s s" % (what, None if t is None
		    else round(t, 1)))
		check(t is not None and t <= BOUND, "%s (1 byte / %.1f s) kept "
		    "its session for %s s (smtp_timeout %d s)" % (what, TRICKLE,
		    "over %d" % (BOUND + 6) if t is None else round(t, 1),
		    TIMEOUT))
		check(d.running(), "odrelayd died")


def test_odmr_port_trickled_command():
	listener_trickle("odmr_port", [("EHLO client.test", 250)],
	    b"NOOP " + b"x" * 200 + b"\r\n", "ODMR client trickling a command")


def test_smtp_port_trickled_data():
	listener_trickle("smtp_port", [("EHLO client.test", 250),
	    ("MAIL FROM:<s@client.test>", 250), ("RCPT TO:<u@example.org>", 250),
	    ("DATA", 354)], b"Subject: slow\r\n", "SMTP client trickling DATA")


if __name__ == "__main__":
	run_tests([
		test_smtpc_trickled_greeting,
		test_smtpc_trickled_mail_reply,
		test_atrn_customer_trickles,
		test_odmr_port_trickled_command,
		test_smtp_port_trickled_data,
	], "hostile")
