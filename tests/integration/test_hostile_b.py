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
    prog, run_tests)
from pullsink import (Sink, add_user, odmr_login, reverse_serve, run_prog,
    submit, sample_message, wait_queue)

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
		# The lease is freed once the deferral is recorded (the queue
		# writer): then a proper pull gets the message (within
		# atrn_rate, 10 a minute).
		for i in range(8):
			c, code, text = odmr_login(d.odmr_port)
			check(code == 235, "AUTH again: %s %s" % (code, text))
			code, text = c.cmd("ATRN example.org")
			if code != 451:
				break
			c.cmd("QUIT")
			c.close()
			time.sleep(0.5)
		check(code == 250, "second ATRN (lease released?): %s %s"
		    % (code, text))
		reverse_serve(c, sink)
		c.close()
		check(sink.delivered_rcpts() == ["u@example.org"],
		    "second pull delivered %r" % sink.delivered_rcpts())
		wait_queue(d, lambda j: qid not in set(json_ids(j)),
		    "message gone after the pull")


# --- delivery side: a refusing peer gets QUIT before the close -------------

def goodbye(c, buf, what, rec):
	"""After the refusal: the client's next line should be QUIT; answer
	221 and note whether it then closed. rec gets (what, line, closed)."""
	line = readline(c, buf)
	closed = None
	if line is not None and line.upper() == b"QUIT":
		c.sendall(b"221 2.0.0 bye\r\n")
		c.settimeout(5)
		try:
			closed = c.recv(4096) == b""
		except OSError:
			closed = False
	rec.append((what, None if line is None else line.decode(errors="replace"),
	    closed))


def refusing_server(stage):
	"""A receiving server that greets 554 ("greeting") or refuses EHLO and
	HELO ("helo"), recording what the client said after the refusal."""

	def handler(c, srv):
		buf = [b""]
		if stage == "greeting":
			c.sendall(b"554 5.7.1 refused.test: no service for you\r\n")
		else:
			c.sendall(b"220 refused.test ESMTP\r\n")
			for verb in (b"EHLO", b"HELO"):
				line = readline(c, buf)
				if line is None or not line.upper().startswith(verb):
					with srv.lock:
						srv.closed_after.append(("%s expected" % verb,
						    line, None))
					return
				c.sendall(b"550 5.7.1 not you\r\n")
		rec = []
		goodbye(c, buf, stage, rec)
		with srv.lock:
			srv.closed_after.extend(rec)
	return handler


def test_smtpc_quit_after_refusal():
	"""RFC 5321 3.1, 4.1.1.10: a client refused at the greeting (554) or
	at EHLO and HELO sends QUIT and lets the server answer; odrelayd
	queued the QUIT and closed at once, so the peer saw a bare close.
	The mail stays queued."""
	for stage in ("greeting", "helo"):
		with Server(refusing_server(stage)) as srv, \
		    Fixture("hostile-refuse-" + stage, extra=EXTRA,
		    domains=domain("refused.test", srv.port)) as d:
			qid = submit(d.smtp_port, "s@client.test", ["u@refused.test"],
			    sample_message("refused"))
			check(etrn(d, "refused.test") in (250, 253), "ETRN refused")
			t0 = time.time()
			while not srv.closed_after and time.time() - t0 < 15:
				time.sleep(0.1)
			check(not srv.errors, "server: %r" % srv.errors)
			check(srv.closed_after, "%s: the server saw no session" % stage)
			what, line, closed = srv.closed_after[0]
			check(line == "QUIT", "refused at the %s, odrelayd said %r "
			    "(want QUIT)" % (stage, line))
			check(closed, "%s: no close after the 221" % stage)
			time.sleep(0.5)
			check(queued(d, qid), "%s: the message left the queue" % stage)


def test_atrn_customer_refuses_greeting():
	"""The reversed ATRN session: a customer greeting 554 gets QUIT (and
	may answer it) before the provider closes; the mail stays queued."""
	with Fixture("hostile-atrn-554", extra=EXTRA, start=False) as d:
		add_user(d, "demo", "demo", "example.org")
		d.start()
		qid = submit(d.smtp_port, "s@client.test", ["u@example.org"],
		    sample_message("atrn-554"))
		c, code, text = odmr_login(d.odmr_port)
		check(code == 235, "AUTH: %s %s" % (code, text))
		c.expect(250, "ATRN example.org")
		c.s.settimeout(10)
		rec = []
		try:
			c.s.sendall(b"554 5.7.1 customer.test: not now\r\n")
			goodbye(c.s, [c.buf], "atrn", rec)
		finally:
			c.close()
		_, line, closed = rec[0]
		check(line == "QUIT", "the customer refused its greeting; the "
		    "provider said %r (want QUIT)" % line)
		check(closed, "no close after the 221")
		time.sleep(0.5)
		check(queued(d, qid), "message gone after a refused pull")


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


# --- odpull against scripted providers (items 7 and 8) -----------------------

def odpull_run(port, sink_port, *extra, timeout=TIMEOUT, bound=40):
	return run_prog([prog("odpull"), "--server", "127.0.0.1:%d" % port,
	    "--user", "demo", "--deliver", "127.0.0.1:%d" % sink_port,
	    "--timeout", str(timeout), "-v"] + list(extra),
	    env={"ODPULL_PASSWORD": "demo"}, timeout=bound)


class Io:
	"""Line I/O on a provider's socket (plain, or TLS after STARTTLS)."""

	def __init__(self, c):
		self.c = c
		self.f = c.makefile("rb")
		self.log = []

	def send(self, data):
		if isinstance(data, str):
			data = data.encode()
		self.c.sendall(data)

	def line(self):
		raw = self.f.readline(70000)
		if not raw:
			raise OSError("odpull closed")
		self.log.append(raw[:200])
		return raw.rstrip(b"\r\n").decode(errors="replace")

	def reply(self):
		"""odpull's reply (all lines); the code as an int."""
		while True:
			l = self.line()
			if len(l) < 4 or l[3] != "-":
				return int(l[:3]), l

	def cmd(self, line):
		self.send(line + "\r\n")
		return self.reply()

	def starttls(self, ctx):
		self.c = ctx.wrap_socket(self.c, server_side=True)
		self.f = self.c.makefile("rb")


def provider_login(io, mechs="CRAM-MD5", tls_ctx=None, rec=None):
	"""The provider's side up to the ATRN command; returns the verb line
	of ATRN (or None when odpull went away)."""
	io.send("220 provider.test ESMTP\r\n")
	tls = False
	while True:
		l = io.line()
		v = l.split(" ", 1)[0].upper()
		if rec is not None:
			rec.append(l)
		if v == "EHLO":
			ext = ["provider.test", "AUTH " + mechs, "ATRN"]
			if tls_ctx is not None and not tls:
				ext.append("STARTTLS")
			io.send("".join("250-%s\r\n" % e for e in ext[:-1]) +
			    "250 %s\r\n" % ext[-1])
		elif v == "STARTTLS":
			io.send("220 go ahead\r\n")
			io.starttls(tls_ctx)
			tls = True
		elif v == "AUTH":
			if l.upper().startswith("AUTH CRAM-MD5"):
				io.send("334 PDEyMzQ1QHByb3ZpZGVyLnRlc3Q+\r\n")
				io.line()
			io.send("235 2.7.0 ok\r\n")
		elif v == "ATRN":
			return l
		elif v == "QUIT":
			io.send("221 bye\r\n")
			return None
		else:
			io.send("502 no\r\n")


def provider(script, **kw):
	"""A Server whose connections log in and then run script(io, srv)
	after answering ATRN with 250 and reading odpull's 220."""
	def handler(c, srv):
		io = Io(c)
		srv.io = io
		if provider_login(io, rec=srv.rec, **kw) is None:
			return
		io.send("250 2.0.0 OK now reversing the connection\r\n")
		code, _ = io.reply()
		srv.rec.append("greeting %d" % code)
		script(io, srv)
	srv = Server(handler)
	srv.rec = []
	srv.results = []
	return srv


def send_message(io, srv, rcpts, body, ehlo=True):
	if ehlo:
		io.cmd("EHLO provider.test")
	srv.results.append(io.cmd("MAIL FROM:<s@client.test>"))
	for r in rcpts:
		srv.results.append(io.cmd("RCPT TO:<%s>" % r))
	code, text = io.cmd("DATA")
	srv.results.append((code, text))
	if code != 354:
		return
	io.send(body + b".\r\n")
	srv.results.append(io.reply())


BODY = b"From: s@client.test\r\nSubject: x\r\n\r\nhello\r\n"


def test_odpull_refuses_rcpt_outside_domains():
	def script(io, srv):
		send_message(io, srv, ["a@example.org", "x@other.example",
		    "b@sub.example.org", "v%evil.test@example.org",
		    "w@notexample.org"], BODY)
		io.cmd("QUIT")

	with provider(script) as srv, Sink() as sink:
		r = odpull_run(srv.port, sink.port, "--tls", "none", "--domain",
		    "example.org")
		got = sink.delivered_rcpts()
		check(got == ["a@example.org", "b@sub.example.org"], "local MTA "
		    "got %r\nodpull:\n%s" % (got, r.out[-2000:]))
		codes = [c for c, _ in srv.results[1:6]]
		check(codes == [250, 550, 250, 550, 550], "RCPT replies %r"
		    % srv.results[1:6])
		check(all("5.7.1" in t for c, t in srv.results[1:6] if c == 550),
		    "550 without 5.7.1: %r" % srv.results[1:6])
		check(r.returncode == 0, "odpull exit %d:\n%s" % (r.returncode,
		    r.out[-2000:]))


def test_odpull_refuses_bare_cr_lf():
	def script(io, srv):
		io.cmd("EHLO provider.test")
		send_message(io, srv, ["a@example.org"], BODY +
		    b"smuggled\nMAIL FROM:<x@y>\r\n", ehlo=False)
		send_message(io, srv, ["b@example.org"], BODY +
		    b"bare\rCR\r\n", ehlo=False)
		send_message(io, srv, ["c@example.org"], BODY, ehlo=False)
		io.cmd("QUIT")

	with provider(script) as srv, Sink() as sink:
		r = odpull_run(srv.port, sink.port, "--tls", "none", "--domain",
		    "example.org")
		ends = [srv.results[i] for i in (3, 7, 11)]
		check([c for c, _ in ends] == [554, 554, 250], "end-of-data "
		    "replies %r\nodpull:\n%s" % (ends, r.out[-2000:]))
		check("5.6.0" in ends[0][1], "no 5.6.0: %r" % (ends[0],))
		got = sink.delivered_rcpts()
		check(got == ["c@example.org"], "local MTA got %r" % got)
		for t, _ in sink.delivered():
			check(b"\n" not in t.data.replace(b"\r\n", b"") and b"\r"
			    not in t.data.replace(b"\r\n", b""), "bare CR/LF "
			    "passed on: %r" % t.data)
		check(all(t.data is None or b"smuggled" not in t.data
		    for t in sink.txns if t.complete), "the smuggled text reached "
		    "the local MTA: %r" % sink.txns)


def tls_ctx(cert, key):
	ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
	ctx.load_cert_chain(cert, key)
	return ctx


def test_odpull_no_plain_over_unverified_tls():
	tmp = tempfile.mkdtemp(prefix="odrelay-hostile-cert-")
	try:
		cert, key = make_cert(tmp)
		ctx = tls_ctx(cert, key)
		with provider(lambda io, srv: None, mechs="PLAIN LOGIN",
		    tls_ctx=ctx) as srv, Sink() as sink:
			r = odpull_run(srv.port, sink.port, "--tls", "opportunistic")
			auth = [l for l in srv.rec if l.upper().startswith("AUTH")]
			check(not auth, "odpull sent %r over unverified TLS" % auth)
			check(r.returncode != 0, "odpull exit 0 without logging in")
			check("PLAIN" in r.out and "--tls required" in r.out,
			    "no clear error:\n" + r.out[-1500:])
		# With CRAM-MD5 offered too, that is used.
		def script(io, srv):
			io.cmd("QUIT")
		with provider(script, mechs="PLAIN LOGIN CRAM-MD5",
		    tls_ctx=ctx) as srv, Sink() as sink:
			r = odpull_run(srv.port, sink.port, "--tls", "opportunistic")
			auth = [l for l in srv.rec if l.upper().startswith("AUTH")]
			check(auth == ["AUTH CRAM-MD5"], "AUTH over unverified TLS: "
			    "%r\n%s" % (auth, r.out[-1500:]))
			check(r.returncode == 0, "odpull exit %d:\n%s"
			    % (r.returncode, r.out[-1500:]))
	finally:
		for f in os.listdir(tmp):
			os.unlink(os.path.join(tmp, f))
		os.rmdir(tmp)


def test_odpull_close_without_quit():
	def script(io, srv):
		send_message(io, srv, ["a@example.org"], BODY)
		io.c.shutdown(socket.SHUT_RDWR)
		time.sleep(0.5)

	with provider(script) as srv, Sink() as sink:
		r = odpull_run(srv.port, sink.port, "--tls", "none")
		check(sink.delivered_rcpts() == ["a@example.org"], "local MTA "
		    "got %r" % sink.delivered_rcpts())
		check(r.returncode == 1, "provider closed without QUIT: odpull "
		    "exit %d (want 1)\n%s" % (r.returncode, r.out[-1500:]))
		check("without QUIT" in r.out and "timed out" not in r.out,
		    "no word about it:\n" + r.out[-800:])


def test_odpull_trickling_provider():
	def script(io, srv):
		io.cmd("EHLO provider.test")
		t = trickle(io.c, b"MAIL FROM:<slow@client.test>")
		srv.rec.append("cut %s" % t)

	with provider(script) as srv, Sink() as sink:
		t0 = time.time()
		r = odpull_run(srv.port, sink.port, "--tls", "none")
		took = time.time() - t0
		print("  provider trickling a command: odpull ended after %.1f s"
		    % took)
		check(r.returncode == 1, "odpull exit %d:\n%s" % (r.returncode,
		    r.out[-1500:]))
		check(took <= BOUND, "a provider trickling a command (1 byte / "
		    "%.1f s) kept odpull for %.1f s (--timeout %d)" % (TRICKLE,
		    took, TIMEOUT))
		check("timed out" in r.out, "no timeout reported:\n" + r.out[-800:])


def test_odpull_endless_reply_and_max_time():
	# A greeting of 5,000 lines: refused after 100.
	def greet(c, srv):
		c.sendall(b"220-provider.test\r\n" * 5000 + b"220 ok\r\n")
		c.settimeout(5)
		try:
			srv.rec.append(c.recv(100))
		except OSError:
			pass

	srv = Server(greet)
	srv.rec = []
	with srv, Sink() as sink:
		r = odpull_run(srv.port, sink.port, "--tls", "none")
		check(r.returncode == 1 and "100 lines" in r.out, "endless "
		    "greeting: exit %d\n%s" % (r.returncode, r.out[-800:]))
		check(not any(x.upper().startswith(b"EHLO") for x in srv.rec),
		    "odpull went on after a 5,000-line reply: %r" % srv.rec)

	# Commands answered in time, but the session never ends: --max-time.
	def script(io, srv):
		io.cmd("EHLO provider.test")
		end = time.time() + BOUND + 6
		while time.time() < end:
			io.cmd("NOOP")
			time.sleep(0.3)

	with provider(script) as srv, Sink() as sink:
		t0 = time.time()
		r = odpull_run(srv.port, sink.port, "--tls", "none",
		    "--max-time", "3", timeout=5)
		took = time.time() - t0
		check(r.returncode == 1 and "time limit" in r.out, "--max-time 3: "
		    "exit %d\n%s" % (r.returncode, r.out[-800:]))
		check(took <= BOUND, "--max-time 3 ended after %.1f s" % took)


# --- per connection: NOOP in time does not keep a slot for ever --------------

def noop_until_421(c, bound):
	"""NOOP every 0.5 s; seconds until a 421 (None if none by bound)."""
	t0 = time.time()
	while time.time() - t0 < bound:
		code, text = c.cmd("NOOP")
		if code == 421:
			check("4.4.2" in text, "421 without 4.4.2: %r" % text)
			return time.time() - t0
		check(code == 250, "NOOP: %s %r" % (code, text))
		time.sleep(0.5)
	return None


def test_session_limit():
	"""smtp_session_limit: an SMTP session, and an ODMR session that has
	not logged in, end at the first command after it; a logged-in ODMR
	customer is not cut."""
	with Fixture("hostile-session", extra=EXTRA + "smtp_session_limit = "
	    "3s\n", start=False) as d:
		add_user(d, "demo", "demo", "example.org")
		d.start()
		c = Conn(d.smtp_port)
		c.greet_ehlo()
		t = noop_until_421(c, 10)
		c.close()
		check(t is not None and t <= 6, "SMTP session with NOOP every "
		    "0.5 s: %s s (limit 3 s)" % t)
		c = Conn(d.odmr_port)
		c.greet_ehlo()
		t = noop_until_421(c, 10)
		c.close()
		check(t is not None and t <= 6, "ODMR session before AUTH with "
		    "NOOP every 0.5 s: %s s (limit 3 s)" % t)
		c, code, text = odmr_login(d.odmr_port)
		check(code == 235, "AUTH: %s %s" % (code, text))
		t = noop_until_421(c, 4.5)
		c.close()
		check(t is None, "a logged-in ODMR customer was cut after %s s" % t)


if __name__ == "__main__":
	run_tests([
		test_smtpc_trickled_greeting,
		test_smtpc_trickled_mail_reply,
		test_atrn_customer_trickles,
		test_smtpc_quit_after_refusal,
		test_atrn_customer_refuses_greeting,
		test_odmr_port_trickled_command,
		test_smtp_port_trickled_data,
		test_session_limit,
		test_tls_250_with_close_notify,
		test_odpull_refuses_rcpt_outside_domains,
		test_odpull_refuses_bare_cr_lf,
		test_odpull_no_plain_over_unverified_tls,
		test_odpull_close_without_quit,
		test_odpull_trickling_provider,
		test_odpull_endless_reply_and_max_time,
	], "hostile_b")
