#!/usr/bin/env python3
"""Review of the second wave as a hostile peer and a careful user would
attack it: webhooks, XWAIT, milters, recipient probes. Each test here
failed on the tree before its fix."""

import os
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, check, fail, queued_id, run_tests,
    send_message)
from pullsink import PullFixture, Sink, submit, sample_message
import test_push as tp


class FloodHook:
	"""An HTTPS endpoint that answers every POST with a response that never
	ends (a huge body, or endless header lines) and counts what it could
	send before the client went away."""

	LIMIT = 64 * 1024 * 1024

	def __init__(self, crt, key, mode):
		self.mode = mode
		self.sent = []
		self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
		self.ctx.load_cert_chain(crt, key)
		self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		self.sock.bind(("127.0.0.1", 0))
		self.sock.listen(8)
		self.port = self.sock.getsockname()[1]
		self.stopping = False
		threading.Thread(target=self._accept, daemon=True).start()

	def _accept(self):
		while not self.stopping:
			try:
				c, _ = self.sock.accept()
			except OSError:
				return
			self.accepted = getattr(self, "accepted", 0) + 1
			threading.Thread(target=self._serve, args=(c,),
			    daemon=True).start()

	def _serve(self, raw):
		n = 0
		try:
			c = self.ctx.wrap_socket(raw, server_side=True)
			c.settimeout(20)
			req = b""
			while b"\r\n\r\n" not in req:
				d = c.recv(4096)
				if not d:
					return
				req += d
			if self.mode == "body":
				c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: "
				    b"100000000000\r\n\r\n")
				chunk = b"x" * 65536
			else:
				c.sendall(b"HTTP/1.1 200 OK\r\n")
				chunk = (b"X-Pad: " + b"y" * 1000 + b"\r\n") * 64
			while n < self.LIMIT:
				c.sendall(chunk)
				n += len(chunk)
		except OSError:
			pass
		finally:
			self.sent.append(n)
			try:
				raw.close()
			except OSError:
				pass

	def close(self):
		self.stopping = True
		self.sock.close()


def test_webhook_huge_response_bounded():
	"""A webhook endpoint answering with an endless body or endless
	headers: the daemon stops reading after a bounded amount (it used to
	keep the whole response in memory)."""
	tmp = tempfile.mkdtemp(prefix="odrelay-review-")
	os.chmod(tmp, 0o755)
	ca, crt, key = tp.make_ca(tmp, "flood")
	body = FloodHook(crt, key, "body")
	hdrs = FloodHook(crt, key, "headers")
	extra = ("notify_url = https://127.0.0.1:%d/hook\n"
	    "notify_ca_file = %s\n" % (body.port, ca))
	domains = tp.DOMAINS.replace("[domain other.example]\nhold = yes",
	    "[domain other.example]\nhold = yes\n"
	    "notify_url = https://127.0.0.1:%d/\n" % hdrs.port)
	try:
		with PullFixture("review-hookflood", extra=extra, domains=domains,
		    start=False) as d:
			tp.users(d)
			submit(d.smtp_port, "s@client.test", ["a@example.org"],
			    sample_message("flood1"))
			submit(d.smtp_port, "s@client.test", ["b@other.example"],
			    sample_message("flood2"))
			deadline = time.time() + 30
			while time.time() < deadline and (not body.sent or
			    not hdrs.sent):
				time.sleep(0.1)
			check(body.sent and hdrs.sent, "the endpoints never saw the "
			    "end of their response (body %r, headers %r, "
			    "connections %r %r)" % (body.sent, hdrs.sent,
			    getattr(body, "accepted", 0), getattr(hdrs, "accepted", 0)))
			check(body.sent[0] < 16 * 1024 * 1024, "%d bytes of response "
			    "body read by the daemon" % body.sent[0])
			check(hdrs.sent[0] < 16 * 1024 * 1024, "%d bytes of response "
			    "headers read by the daemon" % hdrs.sent[0])
			check(d.running(), "odrelayd died")
	finally:
		body.close()
		hdrs.close()
		shutil.rmtree(tmp, ignore_errors=True)


class EmptyProvider:
	"""An ODMR provider that always says mail is waiting (XWAIT 250, ATRN
	250) and then, in the reversed session, has nothing to send (mode
	"empty") or closes at once after 250 to XWAIT (mode "close")."""

	def __init__(self, mode):
		self.mode = mode
		self.conns = 0
		self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		self.sock.bind(("127.0.0.1", 0))
		self.sock.listen(64)
		self.port = self.sock.getsockname()[1]
		self.stopping = False
		threading.Thread(target=self._accept, daemon=True).start()

	def _accept(self):
		while not self.stopping:
			try:
				c, _ = self.sock.accept()
			except OSError:
				return
			self.conns += 1
			threading.Thread(target=self._serve, args=(c,),
			    daemon=True).start()

	def _serve(self, c):
		f = c.makefile("rb")
		try:
			c.sendall(b"220 provider.test ESMTP\r\n")
			while True:
				line = f.readline()
				if not line:
					return
				v = line.strip().upper()
				if v.startswith(b"EHLO"):
					c.sendall(b"250-provider.test\r\n250-AUTH CRAM-MD5 "
					    b"PLAIN\r\n250-ATRN\r\n250 XWAIT\r\n")
				elif v.startswith(b"AUTH"):
					c.sendall(b"334 PDEyMzQ1QHByb3ZpZGVyLnRlc3Q+\r\n")
					f.readline()
					c.sendall(b"235 2.7.0 ok\r\n")
				elif v.startswith(b"XWAIT"):
					c.sendall(b"250 2.0.0 Mail is waiting, send ATRN\r\n")
					if self.mode == "close":
						return
				elif v.startswith(b"ATRN"):
					c.sendall(b"250 2.0.0 OK now reversing\r\n")
					# reversed: the customer greets, we have nothing
					f.readline()
					c.sendall(b"QUIT\r\n")
					f.readline()
					return
				elif v.startswith(b"QUIT"):
					c.sendall(b"221 bye\r\n")
					return
				else:
					c.sendall(b"250 ok\r\n")
		except OSError:
			pass
		finally:
			c.close()

	def close(self):
		self.stopping = True
		self.sock.close()


def test_watch_no_busy_loop():
	"""odpull --watch against a provider that says mail is waiting and
	then has none (or closes after XWAIT's 250): it backs off instead of
	reconnecting in a loop."""
	for mode in ("empty", "close"):
		prov = EmptyProvider(mode)
		sink = Sink().start()
		w = tp.Watch(["127.0.0.1:%d" % prov.port], sink)
		try:
			time.sleep(3)
			check(w.proc.poll() is None, "odpull --watch exited:\n"
			    + w.text()[-2000:])
			n = prov.conns
			check(1 <= n <= 6, "%s: %d connections to the provider in 3 s "
			    "(want a backoff):\n%s" % (mode, n, w.text()[-1500:]))
			w.stop()
		finally:
			w.kill()
			sink.stop()
			prov.close()


def test_quarantine_release_etrn_once():
	"""A quarantined message is not delivered by ETRN; once released,
	ETRN (sent right after the release, twice) delivers it exactly once;
	a message released in a domain that is not held goes out once."""
	from milters import TestFilter
	import test_milter as tm
	with Sink() as sink, TestFilter() as f:
		domains = ("[domain example.org]\nhold = yes\nroute = 127.0.0.1:%d\n\n"
		    "[domain now.example]\nhold = no\nroute = 127.0.0.1:%d\n"
		    % (sink.port, sink.port))
		with Fixture("review-qetrn", extra=tm.conf(f.spec),
		    domains=domains) as d:
			code, text = send_message(d.smtp_port, "a@client.test",
			    ["x@example.org"], tm.msg("quarantine", "q-held"))
			check(code == 250, "quarantine: %s %r" % (code, text))
			held = queued_id(text)
			code, text = send_message(d.smtp_port, "a@client.test",
			    ["y@now.example"], tm.msg("quarantine", "q-now"))
			check(code == 250, "quarantine: %s %r" % (code, text))
			now = queued_id(text)
			c = Conn(d.smtp_port)
			c.greet_ehlo()
			c.cmd("ETRN example.org")
			time.sleep(1)
			check(not sink.txns, "quarantined mail delivered: %r"
			    % sink.txns)
			d.ctl_ok("release", held)
			c.send(b"ETRN example.org\r\nETRN example.org\r\n")
			c.reply()
			c.reply()
			d.ctl_ok("release", now)
			deadline = time.time() + 10
			while time.time() < deadline and (held in d.queue_ids() or
			    now in d.queue_ids()):
				time.sleep(0.1)
			c.cmd("ETRN example.org")
			time.sleep(1)
			c.close()
			subj = [t.data.split(b"Subject: ")[1].split(b"\r\n")[0]
			    for t in sink.txns if t.complete and t.data]
			check(sorted(subj) == [b"q-held", b"q-now"], "delivered after "
			    "release: %r" % subj)
			check(not d.queue_ids(), "left in the queue: %r"
			    % d.queue_ids())


class EomMilter:
	"""A scripted milter: continue to everything, and at the end of the
	message send the packets of eom (a list of (cmd, data)), then accept."""

	def __init__(self, eom):
		self.eom = eom
		self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		self.sock.bind(("127.0.0.1", 0))
		self.sock.listen(8)
		self.port = self.sock.getsockname()[1]
		self.spec = "inet:127.0.0.1:%d" % self.port
		threading.Thread(target=self._accept, daemon=True).start()

	def _accept(self):
		while True:
			try:
				c, _ = self.sock.accept()
			except OSError:
				return
			threading.Thread(target=self._serve, args=(c,),
			    daemon=True).start()

	@staticmethod
	def _pkt(cmd, data=b""):
		return struct.pack(">I", len(data) + 1) + cmd + data

	def _serve(self, c):
		f = c.makefile("rb")
		try:
			while True:
				hdr = f.read(4)
				if len(hdr) < 4:
					return
				data = f.read(struct.unpack(">I", hdr)[0])
				cmd = data[:1]
				if cmd == b"O":
					# version 6, actions: all header changes
					c.sendall(self._pkt(b"O", struct.pack(">III", 6,
					    0x1 | 0x10 | 0x20, 0)))
				elif cmd in (b"D", b"A"):
					continue
				elif cmd == b"Q":
					return
				elif cmd == b"E":
					for pc, pd in self.eom:
						c.sendall(self._pkt(pc, pd))
					c.sendall(self._pkt(b"a"))
				else:
					c.sendall(self._pkt(b"c"))
		except OSError:
			pass
		finally:
			c.close()

	def close(self):
		self.sock.close()


def test_milter_header_injection():
	"""Header changes from a filter with CR/LF in the value or the name
	are not applied as extra header lines: the message is refused by the
	default action (tempfail) or stored with a proper fold, never with a
	smuggled Bcc: line or an early end of the header section."""
	bad = [
		(b"h", b"X-A\0ok\r\nBcc: evil@attacker.test\0"),
		(b"h", b"X-A\0ok\nBcc: evil@attacker.test\0"),
		(b"h", b"X-A\r\nBcc\0evil@attacker.test\0"),
		(b"h", b"X-A\0ok\n\nBcc: evil@attacker.test\0"),
		(b"h", b"X-A\0ok\rBcc: evil@attacker.test\0"),
		(b"m", struct.pack(">I", 1) + b"Subject\0x\r\n\r\nbody\0"),
		(b"i", struct.pack(">I", 0) + b"X-A\0ok\n\0"),
	]
	good = [(b"h", b"X-Folded\0first\n\tsecond\0"),
	    (b"m", struct.pack(">I", 1) + b"Subject\0new\r\n subject\0")]
	for i, pkt in enumerate(bad + [None]):
		m = EomMilter([pkt] if pkt else good)
		try:
			with Fixture("review-mhdr%d" % i, extra="milters = %s\n"
			    "milter_default_action = tempfail\n" % m.spec) as d:
				code, text = send_message(d.smtp_port, "a@client.test",
				    ["x@example.org"], b"From: a@client.test\r\n"
				    b"Subject: old\r\n\r\nbody\r\n")
				if code != 250:
					check(code == 451 and not d.queue_ids(), "bad header "
					    "change %r: %s %r, queue %r" % (pkt, code, text,
					    d.queue_ids()))
					continue
				stored = d.body(queued_id(text))
				hdrs = stored.partition(b"\r\n\r\n")[0]
				check(b"\nBcc:" not in hdrs and b"\r\n\r\n" in stored,
				    "header change %r stored as %r" % (pkt, stored))
				check(b"body\r\n" == stored.partition(b"\r\n\r\n")[2],
				    "body changed by %r: %r" % (pkt, stored))
				for line in hdrs.split(b"\r\n"):
					check(line.strip() != b"" and (b":" in line or
					    line[:1] in (b" ", b"\t")), "header line %r from "
					    "%r in %r" % (line, pkt, stored))
				if pkt is None:
					check(b"X-Folded: first\r\n\tsecond\r\n" in hdrs + b"\r\n" and
					    b"Subject: new\r\n subject\r\n" in hdrs,
					    "folded changes stored as %r" % hdrs)
		finally:
			m.close()


class RawPrimary:
	"""A primary that records every raw line; mode "close": 250 to the
	first RCPT, then the connection is closed."""

	def __init__(self, mode="ok"):
		self.mode = mode
		self.lines = []
		self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		self.sock.bind(("127.0.0.1", 0))
		self.sock.listen(16)
		self.port = self.sock.getsockname()[1]
		threading.Thread(target=self._accept, daemon=True).start()

	def _accept(self):
		while True:
			try:
				c, _ = self.sock.accept()
			except OSError:
				return
			threading.Thread(target=self._serve, args=(c,),
			    daemon=True).start()

	def _serve(self, c):
		buf = b""
		try:
			c.sendall(b"220 raw.test ESMTP\r\n")
			while True:
				d = c.recv(4096)
				if not d:
					return
				buf += d
				while b"\n" in buf:
					line, buf = buf.split(b"\n", 1)
					self.lines.append(line)
					v = line[:4].upper()
					if v == b"EHLO":
						c.sendall(b"250-raw.test\r\n250 PIPELINING\r\n")
					elif v == b"QUIT":
						c.sendall(b"221 bye\r\n")
						return
					elif v == b"RCPT" and self.mode == "close":
						c.sendall(b"250 2.1.5 ok\r\n")
						c.close()
						return
					else:
						c.sendall(b"250 ok\r\n")
		except OSError:
			pass
		finally:
			c.close()

	def close(self):
		self.sock.close()


def test_probe_hostile_addresses():
	"""RCPT addresses with a bare CR, a NUL or overlong parts never reach
	the primary as more than one RCPT line (no injected command); a
	primary that answers 250 and closes leaves mail accepted.""" 
	prim = RawPrimary()
	closer = RawPrimary("close")
	doms = ("[domain r.example]\nhold = no\nroute = [127.0.0.1]:%d\n"
	    "verify_recipients = probe\nverify_timeout = 3s\n\n"
	    "[domain c.example]\nhold = no\nroute = [127.0.0.1]:%d\n"
	    "verify_recipients = probe\nverify_timeout = 3s\n"
	    % (prim.port, closer.port))
	try:
		with Fixture("review-probe", domains=doms) as d:
			c = Conn(d.smtp_port, timeout=30)
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<s@client.test>")
			for a in (b'"a\rQUIT"@r.example', b'"a\x00RSET"@r.example',
			    b'"a\\\rVRFY"@r.example', b"a\rb@r.example",
			    b"x" * 64 + b"@r.example", b"x" * 65 + b"@r.example",
			    b"y@" + b"r" * 250 + b".r.example",
			    b"@r.example:z@r.example", b"ok@r.example"):
				c.send(b"RCPT TO:<" + a + b">\r\n")
				code, t = c.reply()
				check(code in (250, 450, 451, 501, 550, 553), "RCPT %r: %s %r"
				    % (a, code, t))
			c.close()
			time.sleep(0.5)
			for l in prim.lines:
				v = l[:4].upper()
				check(v in (b"EHLO", b"MAIL", b"RCPT", b"RSET", b"QUIT",
				    b"NOOP") and b"\r" not in l[:-1] and b"\0" not in l,
				    "the primary got %r (all: %r)" % (l, prim.lines))
			check(any(l.startswith(b"RCPT TO:<ok@r.example>")
			    for l in prim.lines), "no probe for ok@: %r" % prim.lines)
			code, t = rcpt_once(d, "v@c.example")
			check(code == 250, "250-then-close primary: %s %r" % (code, t))
			# Its 250 may or may not be taken (the close can come before
			# the transaction ends); never as a refusal.
			r = d.ctl_ok("recipients", "--json", "c.example")
			check('"invalid"' not in r.out, "a primary that closed after "
			    "250 made the address invalid: %s" % r.out)
			code, t = rcpt_once(d, "w@c.example")
			check(code == 250, "after the close: %s %r" % (code, t))
	finally:
		prim.close()
		closer.close()


def rcpt_once(d, addr):
	c = Conn(d.smtp_port, timeout=30)
	try:
		c.greet_ehlo()
		c.expect(250, "MAIL FROM:<s@client.test>")
		return c.cmd("RCPT TO:<%s>" % addr)
	finally:
		c.close()


def test_xwait_disconnect_sighup_and_atrn_race():
	"""A SIGHUP while sessions wait (kept: the password file did not
	change), waiters that reset their connection while mail arrives, and a
	wake-up while another session's ATRN is delivering: the daemon stays
	up, the others are woken, and every message reaches the customer
	exactly once."""
	import signal as sig
	with tp.daemon("review-xwait", extra="max_waiting = 100\n"
	    "max_connections_per_ip = 100\nodmr_wait_timeout = 30s\n") as d, \
	    Sink() as sink:
		tp.users(d)
		keep, drop = [], []
		try:
			# SIGHUP keeps the waits (the user still has its domains,
			# test_xreload has the cases that end them); QUIT ends
			# each one cleanly afterwards.
			old = []
			for i in range(10):
				c = tp.login(d)
				c.send("XWAIT\r\n")
				old.append(c)
			tp.wait_waiting(d, 10)
			d.proc.send_signal(sig.SIGHUP)
			time.sleep(0.5)
			for c in old:
				c.send("QUIT\r\n")
				code, text = c.reply()
				check(code == 453, "waiter after SIGHUP: %s %r" % (code,
				    text))
				c.close()
			check(d.running(), "odrelayd died on SIGHUP with waiters")
			for i in range(20):
				c = tp.login(d)
				c.send("XWAIT\r\n")
				(drop if i % 2 else keep).append(c)
			tp.wait_waiting(d, 20)
			for c in drop:
				c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
				    struct.pack("ii", 1, 0))
			# Resets racing with the wake-up.
			t = threading.Thread(target=lambda: [c.close() for c in drop])
			t.start()
			submit(d.smtp_port, "s@client.test", ["u1@example.org"],
			    sample_message("race1"))
			t.join()
			for c in keep:
				c.expect(250, what="waiter woken")
			check(d.running(), "odrelayd died")
			# The first woken session pulls; a second one waits again
			# meanwhile and is woken by mail arriving during that ATRN.
			a, b = keep[0], keep[1]
			a.expect(250, "ATRN")
			b.send("XWAIT\r\n")
			got = {}

			def serve_a():
				got["a"] = tp.reverse_serve(a, sink)
			ta = threading.Thread(target=serve_a)
			ta.start()
			submit(d.smtp_port, "s@client.test", ["u2@example.org"],
			    sample_message("race2"))
			code, text = b.reply()
			if code == 250:
				b.send("ATRN\r\n")
				code, text = b.reply()
				if code == 250:
					tp.reverse_serve(b, sink)
			ta.join(30)
			# Whatever is left is taken by one more ATRN.
			c = tp.login(d)
			c.send("ATRN\r\n")
			code, text = c.reply()
			if code == 250:
				tp.reverse_serve(c, sink)
			c.close()
			subj = sorted(t.data.split(b"Subject: ")[1].split(b"\r\n")[0]
			    for t in sink.txns if t.complete and t.data)
			check(len(subj) == 2 and len(set(subj)) == 2, "delivered: %r"
			    % subj)
			tp.wait_queue(d, tp.queue_empty, "empty after the pulls")
		finally:
			for c in keep + drop:
				try:
					c.close()
				except OSError:
					pass


def test_xwait_user_removed_on_reload():
	"""A customer removed from the password file (and SIGHUP) must not
	keep pulling with a session that logged in before: a session that
	was waiting must not get the mail with ATRN after the reload."""
	import signal as sig
	with tp.daemon("review-xwait-del") as d, Sink() as sink:
		tp.users(d)
		c = tp.login(d)
		c.send("XWAIT\r\n")
		tp.wait_waiting(d, 1)
		r = d.ctl("passwd", "del", "demo")
		check(r.returncode == 0, "passwd del: %s %s" % (r.out, r.err))
		d.proc.send_signal(sig.SIGHUP)
		time.sleep(1)
		submit(d.smtp_port, "s@client.test", ["u@example.org"],
		    sample_message("removed"))
		code, text = c.reply()
		if code == 250:
			c.send("ATRN\r\n")
			code, text = c.reply()
			if code == 250:
				tp.reverse_serve(c, sink)
		c.close()
		check(not sink.txns, "mail pulled by a removed user: %r (%s %r)"
		    % (sink.txns, code, text))
		check(len(d.queue_ids()) == 1, "queue: %r" % d.queue_ids())


def test_xwait_per_user_limit():
	"""One customer cannot take every waiting slot (and the descriptors
	shared with the SMTP listener): past max_waiting_per_user its XWAIT
	gets 452 4.3.2, while another customer still waits."""
	with tp.daemon("review-xwait-user", extra="max_waiting = 100\n"
	    "max_waiting_per_user = 4\n") as d:
		tp.users(d)
		conns = []
		try:
			for i in range(4):
				c = tp.login(d)
				tp.start_wait(c)
				conns.append(c)
			c = tp.login(d)
			conns.append(c)
			t = c.expect(452, "XWAIT", "one waiter too many for the user")
			check("4.3.2" in t, "over max_waiting_per_user: %r" % t)
			o = tp.login(d, "other", "other-secret")
			conns.append(o)
			tp.start_wait(o)
			# One wait ends: the user may wait again.
			conns[0].send("QUIT\r\n")
			conns[0].expect(453)
			conns[0].expect(221)
			time.sleep(0.2)
			tp.start_wait(c)
		finally:
			for c in conns:
				c.close()


def test_webhook_concurrency_bounded():
	"""Mail for many domains whose webhook endpoint never answers: only a
	bounded number of POSTs is in flight at once (each holds a
	descriptor of the small reserve beside the sessions)."""
	hang = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
	hang.bind(("127.0.0.1", 0))
	hang.listen(128)
	accepted = []
	stop = []

	def acceptor():
		hang.settimeout(0.2)
		while not stop:
			try:
				c, _ = hang.accept()
				accepted.append(c)
			except OSError:
				continue
	t = threading.Thread(target=acceptor, daemon=True)
	t.start()
	tmp = tempfile.mkdtemp(prefix="odrelay-review-")
	os.chmod(tmp, 0o755)
	ca, _, _ = tp.make_ca(tmp, "hang")
	n = 30
	domains = "".join("[domain d%d.example]\nhold = yes\n\n" % i
	    for i in range(n))
	extra = ("notify_url = https://127.0.0.1:%d/\nnotify_ca_file = %s\n"
	    % (hang.getsockname()[1], ca))
	try:
		with PullFixture("review-hookmany", extra=extra, domains=domains,
		    start=False) as d:
			d.start()
			for i in range(n):
				submit(d.smtp_port, "s@client.test", ["u@d%d.example" % i],
				    sample_message("many%d" % i))
			time.sleep(2)
			k = len(accepted)
			check(1 <= k <= 16, "%d webhook connections at once for %d "
			    "domains" % (k, n))
			check(len(d.queue_ids()) == n, "queue: %d" % len(d.queue_ids()))
	finally:
		stop.append(1)
		t.join()
		for c in accepted:
			c.close()
		hang.close()
		shutil.rmtree(tmp, ignore_errors=True)


def test_probe_tls_policy_per_domain():
	"""Two domains share a primary; the second requires TLS for delivery
	(tls = encrypt), the primary offers none: its recipient addresses are
	never asked in clear over the connection the first domain opened."""
	prim = RawPrimary()
	doms = ("[domain open.example]\nhold = no\nroute = [127.0.0.1]:%d\n"
	    "verify_recipients = probe\nverify_timeout = 3s\ntls = may\n\n"
	    "[domain secret.example]\nhold = no\nroute = [127.0.0.1]:%d\n"
	    "verify_recipients = probe\nverify_timeout = 3s\ntls = encrypt\n"
	    % (prim.port, prim.port))
	try:
		with Fixture("review-probetls", domains=doms) as d:
			code, t = rcpt_once(d, "a@open.example")
			check(code == 250, "open.example: %s %r" % (code, t))
			code, t = rcpt_once(d, "b@secret.example")
			check(code in (250, 450), "secret.example: %s %r" % (code, t))
			time.sleep(0.3)
			check(any(b"a@open.example" in l for l in prim.lines),
			    "open.example never probed: %r" % prim.lines)
			check(not any(b"secret.example" in l for l in prim.lines),
			    "an address of a tls = encrypt domain asked in clear: %r"
			    % prim.lines)
	finally:
		prim.close()


TESTS = [
	test_probe_tls_policy_per_domain,
	test_webhook_concurrency_bounded,
	test_xwait_per_user_limit,
	test_xwait_user_removed_on_reload,
	test_xwait_disconnect_sighup_and_atrn_race,
	test_probe_hostile_addresses,
	test_milter_header_injection,
	test_quarantine_release_etrn_once,
	test_watch_no_busy_loop,
	test_webhook_huge_response_bounded,
]

if __name__ == "__main__":
	run_tests(TESTS, "review")
