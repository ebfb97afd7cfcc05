#!/usr/bin/env python3
"""Review of the second wave as a hostile peer and a careful user would
attack it: webhooks, XWAIT, milters, recipient probes. Each test here
failed on the tree before its fix."""

import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import check, fail, run_tests
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


TESTS = [
	test_watch_no_busy_loop,
	test_webhook_huge_response_bounded,
]

if __name__ == "__main__":
	run_tests(TESTS, "review")
