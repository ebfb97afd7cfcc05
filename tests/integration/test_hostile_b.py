#!/usr/bin/env python3
"""Hostile peers (issue 17, items 7 and 12): peers that trickle their
bytes are cut off at a deadline, on the delivery side (a receiving server
reached by ETRN, a customer in the reversed ATRN session) and on both
listeners; a final 250 that comes with the TLS close_notify is not lost.

The peers are scripted here on raw sockets; timeouts are configured short
(2 s) and each check allows generous slack."""

import os
import socket
import ssl
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, check, free_port, json_ids, make_cert,
    run_tests)
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


# --- item 12: a final 250 that comes with the TLS close_notify ---------------

class TlsSession:
	"""Server side of TLS over a plain socket with memory BIOs, so the
	test decides which records go out in one write."""

	def __init__(self, c, ctx):
		self.c = c
		self.inb = ssl.MemoryBIO()
		self.outb = ssl.MemoryBIO()
		self.obj = ctx.wrap_bio(self.inb, self.outb, server_side=True)
		self.plain = b""
		while True:
			try:
				self.obj.do_handshake()
				break
			except ssl.SSLWantReadError:
				self.flush()
				d = c.recv(65536)
				if not d:
					raise OSError("closed during the handshake")
				self.inb.write(d)
		self.flush()

	def flush(self):
		out = self.outb.read()
		if out:
			self.c.sendall(out)

	def write(self, data, flush=True):
		self.obj.write(data)
		if flush:
			self.flush()

	def readline(self):
		while b"\r\n" not in self.plain:
			try:
				self.plain += self.obj.read(65536)
				continue
			except ssl.SSLWantReadError:
				pass
			d = self.c.recv(65536)
			if not d:
				return None
			self.inb.write(d)
		line, self.plain = self.plain.split(b"\r\n", 1)
		return line

	def close_notify(self):
		try:
			self.obj.unwrap()
		except (ssl.SSLWantReadError, ssl.SSLError):
			pass


def tls_close_sink(cert, key):
	ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
	ctx.load_cert_chain(cert, key)

	def handler(c, srv):
		buf = [b""]
		c.sendall(b"220 tls.test ESMTP\r\n")
		while True:
			line = readline(c, buf)
			if line is None:
				return
			verb = line[:8].upper()
			if verb.startswith(b"EHLO"):
				c.sendall(b"250-tls.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n")
			elif verb.startswith(b"STARTTLS"):
				c.sendall(b"220 go ahead\r\n")
				break
			else:
				c.sendall(b"502 not now\r\n")
		t = TlsSession(c, ctx)
		while True:
			line = t.readline()
			if line is None:
				return
			verb = line[:4].upper()
			if verb == b"EHLO":
				t.write(b"250-tls.test\r\n250 8BITMIME\r\n")
			elif verb == b"DATA":
				t.write(b"354 go ahead\r\n")
				while True:
					line = t.readline()
					if line is None:
						return
					if line == b".":
						break
				# Half a line first, so the client buffers it; then
				# the rest, the close_notify and the FIN at once.
				t.write(b"250 2.0.0 o")
				time.sleep(0.3)
				with srv.lock:
					srv.messages += 1
				t.write(b"k: queued\r\n", flush=False)
				t.close_notify()
				t.flush()
				c.shutdown(socket.SHUT_WR)
				time.sleep(0.5)
				return
			elif verb == b"QUIT":
				t.write(b"221 bye\r\n")
				return
			else:
				t.write(b"250 ok\r\n")
	return handler


def test_tls_250_with_close_notify():
	"""The end-of-data 250 arrives in the same read as the close_notify:
	it counts (the message leaves the queue), and the message is never
	sent twice."""
	tmp = tempfile.mkdtemp(prefix="odrelay-hostile-cert-")
	try:
		cert, key = make_cert(tmp)
		with Server(tls_close_sink(cert, key)) as srv, \
		    Fixture("hostile-tls", extra=EXTRA,
		    domains=domain("tls.test", srv.port)) as d:
			qid = submit(d.smtp_port, "s@client.test", ["u@tls.test"],
			    sample_message("tls-close"))
			check(etrn(d, "tls.test") in (250, 253), "ETRN refused")
			t0 = time.time()
			while srv.messages < 1 and time.time() - t0 < 10:
				time.sleep(0.1)
			check(srv.messages == 1, "the sink got %d messages"
			    % srv.messages)
			wait_queue(d, lambda j: qid not in set(json_ids(j)),
			    "the message answered 250 to leave the queue")
			# Nothing left to send: a second ETRN finds no mail.
			code = etrn(d, "tls.test")
			time.sleep(1.0)
			check(srv.messages == 1, "message sent %d times"
			    % srv.messages)
			check(code == 251, "second ETRN: %s (want 251)" % code)
			check(not srv.errors, "sink: %r" % srv.errors)
	finally:
		for f in os.listdir(tmp):
			os.unlink(os.path.join(tmp, f))
		os.rmdir(tmp)


if __name__ == "__main__":
	run_tests([
		test_smtpc_trickled_greeting,
		test_smtpc_trickled_mail_reply,
		test_atrn_customer_trickles,
		test_odmr_port_trickled_command,
		test_smtp_port_trickled_data,
		test_tls_250_with_close_notify,
	], "hostile_b")
