#!/usr/bin/env python3
"""verify_recipients = probe: RCPT on a backup MX asks the primary (a real
Postfix started by the test, refusing unknown users with
relay_recipient_maps), remembers the answers, keeps taking mail when the
primary is down, never lets a slow primary hold other sessions, shares one
probe between many sessions, and treats a primary that talks nonsense as
"unknown"."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Failure, Fixture, Skip, check, fail, free_port,
    run_tests)
from dns import Dns

POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"


# --- a private Postfix instance as the primary -----------------------------

class Postfix:
	"""Postfix master in the foreground (master -d) with its own
	config_directory and queue_directory under dirpath; relays for
	`domain` and knows only `users` there (relay_recipient_maps)."""

	def __init__(self, dirpath, domain, users):
		if not os.path.exists(POSTFIX_MASTER) or shutil.which("postfix") is None:
			raise Skip("postfix not installed")
		if os.geteuid() != 0:
			raise Skip("a private Postfix needs root")
		self.dir = os.path.join(dirpath, "postfix")
		self.port = free_port()
		self.proc = None
		etc = os.path.join(self.dir, "etc")
		q = os.path.join(self.dir, "queue")
		data = os.path.join(self.dir, "data")
		os.makedirs(etc)
		os.makedirs(os.path.join(q, "pid"))
		os.makedirs(data)
		for sub in ("public", "private", "maildrop", "incoming", "active",
		    "deferred", "defer", "bounce", "corrupt", "flush", "hold",
		    "saved", "trace"):
			os.makedirs(os.path.join(q, sub))
			shutil.chown(os.path.join(q, sub), "postfix")
		for sub in ("public", "maildrop"):
			shutil.chown(os.path.join(q, sub), group="postdrop")
		shutil.chown(data, "postfix")
		with open(os.path.join(etc, "rcpts"), "w") as f:
			for u in users:
				f.write("%s ok\n" % u)
		with open(os.path.join(etc, "main.cf"), "w") as f:
			f.write("""compatibility_level = 3.6
queue_directory = %s
data_directory = %s
mail_owner = postfix
setgid_group = postdrop
myhostname = primary.test
mydomain = primary.test
myorigin = primary.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relay_domains = %s
relay_recipient_maps = texthash:%s/rcpts
mynetworks = 127.0.0.0/8
maillog_file = /dev/stdout
smtpd_banner = $myhostname ESMTP
alias_maps =
alias_database =
biff = no
""" % (q, data, domain, etc))
		with open(os.path.join(etc, "master.cf"), "w") as f:
			f.write("""127.0.0.1:%d inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
rewrite unix - - n - - trivial-rewrite
anvil unix - - n - 1 anvil
proxymap unix - - n - - proxymap
postlog unix-dgram n - n - 1 postlogd
""" % self.port)
		self.etc = etc
		self.domain = domain.split()[0]
		self.log = os.path.join(self.dir, "postfix.log")

	def start(self):
		self.logf = open(self.log, "ab")
		# Its own process group: stop() ends master and its children.
		self.proc = subprocess.Popen([POSTFIX_MASTER, "-d", "-c", self.etc],
		    stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
		    start_new_session=True)
		deadline = time.time() + 15
		while time.time() < deadline:
			check(self.proc.poll() is None, "postfix master exited (%s):\n%s"
			    % (self.proc.returncode, self.log_text()))
			try:
				# Ready once it refuses an unknown user (its helper
				# services answer), not just once it greets.
				c = Conn(self.port, timeout=5)
				try:
					c.expect(220)
					c.expect(250, "EHLO warmup.test")
					c.expect(250, "MAIL FROM:<>")
					code, _ = c.cmd("RCPT TO:<nobody@%s>" % self.domain)
					c.cmd("QUIT")
				finally:
					c.close()
				if code == 550:
					return
				time.sleep(0.2)
			except (OSError, Failure):
				time.sleep(0.1)
		fail("postfix did not listen on %d:\n%s" % (self.port, self.log_text()))

	def stop(self):
		if self.proc is not None and self.proc.poll() is None:
			try:
				os.killpg(self.proc.pid, signal.SIGTERM)
			except ProcessLookupError:
				pass
			try:
				self.proc.wait(15)
			except subprocess.TimeoutExpired:
				self.proc.kill()
				self.proc.wait(5)
		self.proc = None
		# Its children go away with it; wait until nothing listens.
		deadline = time.time() + 10
		while time.time() < deadline:
			try:
				socket.create_connection(("127.0.0.1", self.port), 0.5).close()
				time.sleep(0.1)
			except OSError:
				return

	def log_text(self):
		try:
			with open(self.log, "rb") as f:
				return f.read().decode(errors="replace")[-3000:]
		except OSError:
			return ""


# --- a scripted primary ----------------------------------------------------

class Scripted:
	"""One-thread-per-connection SMTP server. mode: 'ok' (250 to every
	RCPT, after `delay` seconds), 'garbage', 'endless', 'close'."""

	def __init__(self, mode="ok", delay=0.0, refuse=()):
		self.mode = mode
		self.delay = delay
		self.refuse = refuse
		self.rcpts = []
		self.lock = threading.Lock()
		self.stopping = False
		self.ls = socket.socket()
		self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		self.ls.bind(("127.0.0.1", 0))
		self.ls.listen(50)
		self.port = self.ls.getsockname()[1]
		self.conns = []
		threading.Thread(target=self._accept, daemon=True).start()

	def _accept(self):
		while not self.stopping:
			try:
				c, _ = self.ls.accept()
			except OSError:
				return
			self.conns.append(c)
			threading.Thread(target=self._serve, args=(c,), daemon=True).start()

	def _serve(self, c):
		f = c.makefile("rb")
		try:
			c.sendall(b"220 scripted.test ESMTP\r\n")
			while True:
				line = f.readline(4096)
				if not line:
					return
				cmd = line.decode(errors="replace").strip()
				verb = cmd[:4].upper()
				if verb == "EHLO":
					c.sendall(b"250-scripted.test\r\n250 PIPELINING\r\n")
				elif verb == "RCPT":
					addr = cmd.split(":", 1)[1].strip().strip("<>")
					with self.lock:
						self.rcpts.append(addr)
					if self.delay:
						time.sleep(self.delay)
					if self.mode == "garbage":
						c.sendall(b"hello? this is not SMTP\r\n")
					elif self.mode == "endless":
						try:
							for _ in range(64):
								c.sendall(b"250" + b"x" * 4096)
							time.sleep(20)
						except OSError:
							pass
						return
					elif self.mode == "close":
						c.sendall(b"550-5.1.1 no such us")
						c.close()
						return
					elif addr in self.refuse:
						c.sendall(b"550 5.1.1 <%s>: no such user\r\n"
						    % addr.encode())
					else:
						c.sendall(b"250 2.1.5 ok\r\n")
				elif verb == "QUIT":
					c.sendall(b"221 bye\r\n")
					return
				else:
					c.sendall(b"250 2.0.0 ok\r\n")
		except OSError:
			pass
		finally:
			try:
				c.close()
			except OSError:
				pass

	def close(self):
		self.stopping = True
		self.ls.close()
		for c in self.conns:
			try:
				c.close()
			except OSError:
				pass


# --- helpers ---------------------------------------------------------------

def domain(name, port, extra=""):
	return ("\n[domain %s]\nhold = no\nroute = [127.0.0.1]:%d\n"
	    "verify_recipients = probe\n%s\n" % (name, port, extra))


def rcpt(d, addr, conn=None):
	c = conn or Conn(d.smtp_port, timeout=30)
	try:
		c.greet_ehlo("client.test")
		c.expect(250, "MAIL FROM:<s@client.test>")
		return c.cmd("RCPT TO:<%s>" % addr)
	finally:
		if conn is None:
			c.close()


def known(d, dom):
	r = d.ctl_ok("recipients", "--json", dom)
	try:
		return {e["address"]: e for e in json.loads(r.out)}
	except (ValueError, KeyError, TypeError) as e:
		fail("recipients --json: %s\n%s" % (e, r.out[:2000]))


def wait_known(d, dom, addrs):
	"""The listing reads the queue: answers appear once committed."""
	deadline = time.time() + 10
	k = {}
	while time.time() < deadline:
		k = known(d, dom)
		if all(a in k for a in addrs):
			return k
		time.sleep(0.1)
	fail("%r never listed: %r" % (addrs, k))


def counters(d):
	r = d.ctl_ok("stats", "--json")
	try:
		return json.loads(r.out).get("daemon", {})
	except ValueError as e:
		fail("stats --json: %s\n%s" % (e, r.out[:2000]))


def probes(d, result):
	return counters(d).get('odrelay_recipient_probes_total{result="%s"}'
	    % result, 0)


# --- tests -----------------------------------------------------------------

def test_postfix_primary():
	tmp = __import__("tempfile").mkdtemp(prefix="odrelay-verify-pf-")
	os.chmod(tmp, 0o755)	# the postfix user walks into it
	pf = Postfix(tmp, "backup.example tempfail.example",
	    ["alice@backup.example", "erin@tempfail.example"])
	try:
		pf.start()
		doms = (domain("backup.example", pf.port, "verify_timeout = 5s") +
		    domain("tempfail.example", pf.port, "verify_unknown = tempfail"))
		with Fixture("verify-postfix", domains=doms) as d:
			code, text = rcpt(d, "alice@backup.example")
			check(code == 250, "known user: %s %r\npostfix:\n%s" % (code,
			    text, pf.log_text()))
			code, text = rcpt(d, "bob@backup.example")
			check(code == 550 and "5.1.1" in text and
			    "relay recipient table" in text, "unknown user while the "
			    "primary is up: %s %r\npostfix:\n%s" % (code, text,
			    pf.log_text()))
			# Answered from the cache now (no second probe).
			n = probes(d, "invalid")
			code, text = rcpt(d, "BOB@backup.example")
			check(code == 550, "cached refusal: %s %r" % (code, text))
			check(probes(d, "invalid") == n, "a cached answer probed again")
			k = wait_known(d, "backup.example", ("alice@backup.example",
			    "bob@backup.example"))
			now = time.time()
			check(k.get("alice@backup.example", {}).get("state") == "valid"
			    and k["alice@backup.example"]["source"] == "probe" and
			    abs(k["alice@backup.example"]["expires"] - now - 30 * 86400)
			    < 120, "alice: %r" % k)
			check(k.get("bob@backup.example", {}).get("state") == "invalid"
			    and abs(k["bob@backup.example"]["expires"] - now - 3 * 3600)
			    < 120, "bob: %r" % k)
			c = counters(d)
			check(c.get('odrelay_rcpt_refused_total{mechanism="probe"}', 0)
			    >= 2, "refusals by probe not counted: %r" % c)
			check(c.get('odrelay_recipient_cache_lookups_total{result="hit"}',
			    0) >= 1, "cache hits not counted: %r" % c)

			# Pipelined: the deferred RCPT reply keeps its place.
			c = Conn(d.smtp_port, timeout=30)
			c.greet_ehlo("client.test")
			c.send("MAIL FROM:<s@client.test>\r\nRCPT TO:<frank@backup.example>"
			    "\r\nRCPT TO:<alice@backup.example>\r\nRSET\r\nNOOP\r\n")
			got = [c.reply()[0] for _ in range(5)]
			c.close()
			check(got == [250, 550, 250, 250, 250], "pipelined replies: %r"
			    % got)

			pf.stop()
			code, text = rcpt(d, "alice@backup.example")
			check(code == 250, "known address, primary down: %s %r"
			    % (code, text))
			code, text = rcpt(d, "carol@backup.example")
			check(code == 250, "unknown address, primary down, "
			    "verify_unknown = accept: %s %r" % (code, text))
			code, text = rcpt(d, "dave@tempfail.example")
			check(code == 450 and "4.1.1" in text, "verify_unknown = "
			    "tempfail, primary down: %s %r" % (code, text))
			check("carol@backup.example" not in known(d, "backup.example"),
			    "an unknown answer was remembered")
			check(probes(d, "unknown") >= 2, "unknown probes not counted")
	finally:
		pf.stop()
		shutil.rmtree(tmp, ignore_errors=True)


def test_slow_primary():
	slow = Scripted(delay=30)
	slow2 = Scripted(delay=30)
	try:
		doms = (domain("slow.example", slow.port, "verify_timeout = 4s") +
		    domain("slow2.example", slow2.port) +
		    "\n[domain other.example]\nhold = yes\n")
		with Fixture("verify-slow", domains=doms) as d:
			a = Conn(d.smtp_port, timeout=30)
			a.greet_ehlo("client.test")
			a.expect(250, "MAIL FROM:<s@client.test>")
			a.send("RCPT TO:<x@slow.example>\r\n")
			# While A waits for the primary, B does a whole transaction.
			b = Conn(d.smtp_port, timeout=30)
			b.greet_ehlo("client.test")
			b.expect(250, "MAIL FROM:<s@client.test>")
			b.expect(250, "RCPT TO:<u@other.example>")
			b.expect(354, "DATA")
			b.send("Subject: t\r\n\r\nhi\r\n.\r\n")
			b.expect(250, what="end of data while a probe hangs")
			b.cmd("QUIT")
			b.close()
			check(a.pending(0.05) == b"", "A answered before B finished")
			# The probe gives up: "unknown", accepted.
			code, text = a.reply()
			check(code == 250, "RCPT after a probe timeout: %s %r"
			    % (code, text))
			a.close()
			# The slow primary is left alone for a while: answered at once.
			code, text = rcpt(d, "y@slow.example")
			check(code == 250, "second address: %s %r" % (code, text))
			check(len(slow.rcpts) == 1, "probes while the primary was "
			    "known slow: %r" % slow.rcpts)
			# SIGTERM while a session waits for a probe: a clean stop.
			c = Conn(d.smtp_port, timeout=30)
			c.greet_ehlo("client.test")
			c.expect(250, "MAIL FROM:<s@client.test>")
			c.send("RCPT TO:<z@slow2.example>\r\n")
			deadline = time.time() + 10
			while not slow2.rcpts and time.time() < deadline:
				time.sleep(0.05)
			check(slow2.rcpts == ["z@slow2.example"], "no probe started")
			rc = d.stop()
			check(rc == 0, "odrelayd exit %s with a probe pending" % rc)
			code, _ = c.reply()
			check(code in (421, None), "pending RCPT at shutdown: %s" % code)
			c.close()
	finally:
		slow.close()
		slow2.close()


def test_one_probe_for_many():
	prim = Scripted(delay=1.0)
	try:
		doms = domain("many.example", prim.port)
		extra = "max_connections_per_ip = 200\n"
		with Fixture("verify-many", extra=extra, domains=doms) as d:
			n = 100
			conns = []
			for _ in range(n):
				c = Conn(d.smtp_port, timeout=30)
				c.greet_ehlo("client.test")
				c.expect(250, "MAIL FROM:<s@client.test>")
				conns.append(c)
			for c in conns:
				c.send("RCPT TO:<same@many.example>\r\n")
			# Some clients give up while the probe runs: their places
			# in the queue of waiters go, the others still get theirs.
			gone = conns[::10]
			for c in gone:
				c.close()
			waiting = [c for c in conns if c not in gone]
			codes = [c.reply()[0] for c in waiting]
			for c in waiting:
				c.close()
			check(codes == [250] * len(waiting), "replies: %r" % codes)
			check(prim.rcpts == ["same@many.example"], "the primary was "
			    "asked %d times: %r" % (len(prim.rcpts), prim.rcpts[:5]))
			check(probes(d, "valid") == 1, "probe counter: %r" % counters(d))
	finally:
		prim.close()


def test_bad_primaries():
	for mode in ("garbage", "endless", "close"):
		prim = Scripted(mode=mode)
		try:
			doms = (domain("bad.example", prim.port, "verify_timeout = 3s") +
			    domain("bad2.example", prim.port, "verify_timeout = 3s\n"
			    "verify_unknown = tempfail"))
			with Fixture("verify-" + mode, domains=doms) as d:
				code, text = rcpt(d, "x@bad.example")
				check(code == 250, "%s primary, accept: %s %r" % (mode,
				    code, text))
				check(known(d, "bad.example") == {}, "%s primary: "
				    "remembered %r" % (mode, known(d, "bad.example")))
				# A fresh probe for the tempfail domain goes to the
				# same (down) destination: 450, not a refusal.
				code, text = rcpt(d, "y@bad2.example")
				check(code == 450, "%s primary, tempfail: %s %r" % (mode,
				    code, text))
		finally:
			prim.close()


def test_scripted_refusal_and_self():
	"""A 5xx from a scripted primary is refused with its text; a route
	back to this relay is never probed (the answer is "unknown")."""
	prim = Scripted(refuse=("no@r.example",))
	try:
		fx = Fixture("verify-refuse", domains=domain("r.example", prim.port),
		    start=False)
		d = fx.d
		d.text += ("\n[domain loop.example]\nhold = no\nroute = "
		    "[127.0.0.1]:%d\nverify_recipients = probe\n"
		    "verify_unknown = tempfail\n" % d.smtp_port)
		with open(d.conf, "w") as f:
			f.write(d.text)
		with fx:
			d.start()
			code, text = rcpt(d, "no@r.example")
			check(code == 550 and "no such user" in text, "refusal: %s %r"
			    % (code, text))
			code, text = rcpt(d, "yes@r.example")
			check(code == 250, "accepted: %s %r" % (code, text))
			d.ctl_ok("recipients", "forget", "r.example", "no@r.example")
			check("no@r.example" not in known(d, "r.example"), "forget")
			code, text = rcpt(d, "me@loop.example")
			check(code == 450, "a route to ourselves: %s %r" % (code, text))
			check(prim.rcpts == ["no@r.example", "yes@r.example"],
			    "primary asked: %r" % prim.rcpts)
			check(len(prim.conns) == 1, "the probe connection was not "
			    "reused: %d connections" % len(prim.conns))
	finally:
		prim.close()


def test_mx_primary():
	"""Without a route the primary is found by MX: only hosts preferred
	over this relay (relay.test) are asked; when this relay is the best
	MX there is no primary (the answer is "unknown")."""
	prim = Scripted(refuse=("no@mx.example",))
	dns = Dns(mx=[("mx.example", "primary.test", 10),
	    ("mx.example", "relay.test", 20),
	    ("self.example", "relay.test", 10),
	    ("self.example", "worse.test", 20)],
	    hosts=[("primary.test", "127.0.0.1"), ("relay.test", "127.0.0.2"),
	    ("worse.test", "127.0.0.1")])
	try:
		doms = ("\n[domain mx.example]\nhold = no\nverify_recipients = probe\n"
		    "\n[domain self.example]\nhold = no\nverify_recipients = probe\n"
		    "verify_unknown = tempfail\n")
		fx = Fixture("verify-mx", extra="delivery_port = %d\n" % prim.port,
		    domains=doms, start=False)
		d = fx.d
		d.text = re.sub(r"(?m)^dns_servers = .*$",
		    "dns_servers = 127.0.0.1:%d" % dns.port, d.text)
		with open(d.conf, "w") as f:
			f.write(d.text)
		with fx:
			d.start()
			code, text = rcpt(d, "no@mx.example")
			check(code == 550 and "no such user" in text, "MX primary "
			    "refusal: %s %r" % (code, text))
			code, text = rcpt(d, "yes@mx.example")
			check(code == 250, "MX primary: %s %r" % (code, text))
			code, text = rcpt(d, "a@self.example")
			check(code == 450, "best MX is this relay: %s %r" % (code, text))
			check(prim.rcpts == ["no@mx.example", "yes@mx.example"],
			    "asked: %r" % prim.rcpts)
	finally:
		prim.close()
		dns.cleanup()


if __name__ == "__main__":
	run_tests([test_postfix_primary, test_slow_primary,
	    test_one_probe_for_many, test_bad_primaries,
	    test_scripted_refusal_and_self, test_mx_primary],
	    "verify_recipients = probe")
