#!/usr/bin/env python3
"""Push delivery: the XWAIT extension on the ODMR listener, odpull --watch,
arrival webhooks (issue 12)."""

import base64
import http.server
import json
import os
import ssl
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Skip, check, fail, fetchmail_argv, free_port, prog,
    run_tests)
from pullsink import (PullFixture, Sink, add_user, odmr_login, reverse_serve,
    run_prog, sample_message, submit, wait_queue)

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


def login_on(c, user="demo", password="demo"):
	c, code, text = odmr_login(0, user, password, conn=c)
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
			# One more waiter is over max_waiting: 452 (the closed
			# sessions above may take a moment to go).
			for _ in range(50):
				c = Conn(d.odmr_port)
				code, _ = c.reply()
				if code == 220:
					break
				c.close()
				time.sleep(0.1)
			c.expect(250, "EHLO customer.test")
			c = login_on(c)
			c.expect(452, "XWAIT")
			c.close()
			submit(d.smtp_port, "s@client.test", ["user@example.org"],
			    sample_message("many"))
			for c in waiting:
				c.expect(250, what="every waiter woken")
		finally:
			for c in waiting:
				c.close()


def test_waiting_list_many_domains():
	"""odrelayctl queue lists every domain waited for, however many (the
	daemon's answer was one line cut at 7,900 bytes: about 150 names of
	this length)."""
	users_n, per = 4, 64
	names = [["customer-%d-with-a-rather-long-domain-name-%02d.example"
	    % (u, i) for i in range(per)] for u in range(users_n)]
	conf = "".join("[domain %s]\nhold = yes\n" % n
	    for ns in names for n in ns)
	with PullFixture("push-list", domains=conf, start=False) as d:
		for u in range(users_n):
			add_user(d, "user%d" % u, "pw%d" % u, *names[u])
		d.start()
		waiting = []
		try:
			for u in range(users_n):
				c = login(d, "user%d" % u, "pw%d" % u)
				start_wait(c)	# all of the user's domains
				waiting.append(c)
			# The user3 session twice: counts of 2.
			c = login(d, "user3", "pw3")
			start_wait(c, names[3][0])
			waiting.append(c)
			wait_waiting(d, 2, names[3][0])
			m = waiting_map(control(d, "waiting"))
			want = {n: 1 for ns in names for n in ns}
			want[names[3][0]] = 2
			check(m == want, "control waiting: %d domains, %d "
			    "expected; missing e.g. %s" % (len(m), len(want),
			    sorted(set(want) - set(m))[:3]))
			r = d.ctl("queue", "--json")
			check(r.returncode == 0, "queue --json: %d %s" % (
			    r.returncode, r.err))
			got = {w["domain"]: w["sessions"]
			    for w in json.loads(r.out)["waiting"]}
			check(got == want, "queue --json lists %d of %d waited-for "
			    "domains" % (len(got), len(want)))
			r = d.ctl("queue")
			line = [ln for ln in r.out.splitlines()
			    if ln.startswith("Customers waiting now")]
			check(len(line) == 1 and line[0].count(".example (") ==
			    len(want) and "%s (2)" % names[3][0] in line[0],
			    "queue text: %r" % [x[:300] for x in line])
			r = d.ctl("queue", names[2][5])
			check("Customers waiting now (XWAIT): %s (1)"
			    % names[2][5] in r.out, "queue DOMAIN: %r" % r.out)
		finally:
			for c in waiting:
				c.close()


# --- odpull --watch -------------------------------------------------------------

def control(d, line):
	"""One control-socket command; its answer (all lines: the daemon
	closes the connection after it)."""
	s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
	s.settimeout(5)
	try:
		s.connect(d.sock)
		s.sendall(line.encode() + b"\n")
		data = b""
		while True:
			c = s.recv(65536)
			if not c:
				break
			data += c
		return data.decode().strip()
	finally:
		s.close()


def waiting_map(r):
	"""{domain: sessions} from a 'waiting' answer ("250-DOMAIN=N" lines,
	then "250 N domains")."""
	m = {}
	for ln in r.splitlines():
		check(ln[:4] in ("250-", "250 "), "waiting answer: %r" % ln)
		for w in ln[4:].split():
			name, eq, k = w.partition("=")
			if eq:
				m[name] = int(k)
	return m


def wait_waiting(d, n=1, domain="example.org", timeout=15.0):
	"""Until n sessions wait for domain (control 'waiting')."""
	deadline = time.time() + timeout
	r = ""
	while time.time() < deadline:
		r = control(d, "waiting")
		if waiting_map(r).get(domain, 0) >= n:
			return
		time.sleep(0.05)
	fail("no XWAIT session for %s within %.0f s (control: %r)\n%s"
	    % (domain, timeout, r, "\n".join(d.log_text().splitlines()[-30:])))


def wait_sink(sink, n, timeout=15.0):
	deadline = time.time() + timeout
	while time.time() < deadline:
		if len(sink.delivered()) >= n:
			return time.time()
		time.sleep(0.005)
	fail("sink has %d messages, want %d\n%s" % (len(sink.delivered()), n,
	    sink.dump()))


class Watch:
	"""odpull --watch in the background; stop() checks exit 0 on SIGTERM."""

	def __init__(self, servers, sink, *extra, user="demo", password="demo",
	    conf=None):
		self.out = tempfile.NamedTemporaryFile(prefix="odpull-watch-",
		    delete=False)
		self.conf = None
		if conf is not None:
			# The servers (and watch = yes) from a -c file.
			with tempfile.NamedTemporaryFile("w", prefix="odpull-conf-",
			    delete=False) as f:
				f.write("watch = yes\n" + "".join("server = %s\n" % x
				    for x in servers))
				self.conf = f.name
			args = [prog("odpull"), "-c", self.conf]
			servers = []
		else:
			args = [prog("odpull"), "--watch"]
		args += ["--user", user, "--deliver",
		    "127.0.0.1:%d" % sink.port, "--tls", "none", "--timeout", "20",
		    "-v"]
		for srv in servers:
			args += ["--server", srv]
		env = dict(os.environ)
		env["ODPULL_PASSWORD"] = password
		self.proc = subprocess.Popen(args + list(extra), env=env,
		    stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.out)

	def text(self):
		with open(self.out.name, "rb") as f:
			return f.read().decode(errors="replace")

	def stop(self):
		if self.proc.poll() is None:
			self.proc.send_signal(signal.SIGTERM)
		try:
			rc = self.proc.wait(timeout=15)
		except subprocess.TimeoutExpired:
			self.proc.kill()
			self.proc.wait()
			fail("odpull --watch did not end within 15 s of SIGTERM:\n"
			    + self.text()[-3000:])
		check(rc == 0, "odpull --watch exit %s on SIGTERM (want 0):\n%s"
		    % (rc, self.text()[-3000:]))
		return rc

	def kill(self):
		if self.proc.poll() is None:
			self.proc.kill()
			self.proc.wait()
		os.unlink(self.out.name)
		if self.conf:
			os.unlink(self.conf)


def msgids(sink):
	out = []
	for t, _ in sink.delivered():
		for line in t.data.split(b"\r\n"):
			if line.lower().startswith(b"message-id:"):
				out.append(line.split(b":", 1)[1].strip().decode())
	return out


def test_watch_receives():
	with daemon("push-watch") as d, Sink() as sink:
		users(d)
		w = Watch(["127.0.0.1:%d" % d.odmr_port], sink, "--domain",
		    "example.org")
		try:
			wait_waiting(d)
			# odrelayctl queue tells that the customer waits now.
			out = d.ctl_ok("queue").out
			check("Customers waiting now (XWAIT): example.org (1)" in out,
			    "odrelayctl queue:\n" + out)
			j = d.queue_json()
			check(j.get("waiting") == [{"domain": "example.org",
			    "sessions": 1}], "queue --json waiting: %r" % j.get("waiting"))
			for i in range(3):
				wait_waiting(d)
				t0 = time.time()
				submit(d.smtp_port, "s@client.test", ["user@example.org"],
				    sample_message("watch%d" % i))
				t1 = wait_sink(sink, i + 1)
				print("    odpull --watch: message %d at the local MTA "
				    "%.0f ms after the provider's 250" % (i + 1,
				    (t1 - t0) * 1000))
			wait_queue(d, queue_empty, "empty after the pushes")
			w.stop()
			check(sorted(msgids(sink)) == ["<watch%d@client.test>" % i
			    for i in range(3)], "messages at the sink: %r" % msgids(sink))
		finally:
			w.kill()


def fetchmail_other(d, sink_port, tmp):
	"""fetchmail (plain RFC 2645) pulling other.example as user 'other'."""
	if shutil.which("fetchmail") is None:
		raise Skip("fetchmail not installed")
	rc = os.path.join(tmp, "fetchmailrc")
	with open(rc, "w") as f:
		f.write('poll 127.0.0.1 via 127.0.0.1 protocol ODMR port %d '
		    'user "other" password "other-secret" fetchdomains other.example '
		    'smtphost 127.0.0.1/%d\n' % (d.odmr_port, sink_port))
	os.chmod(rc, 0o600)
	home = os.path.join(tmp, "home")
	os.makedirs(home, exist_ok=True)
	return run_prog(fetchmail_argv(["fetchmail", "-f", rc, "--nosyslog", "-v",
	    "--nodetach", "--pidfile", os.path.join(tmp, "fetchmail.pid")]),
	    env={"HOME": home, "FETCHMAILHOME": home}, timeout=40)


def test_fetchmail_with_waiting_sessions():
	with daemon("push-fm") as d, Sink() as sink, Sink() as fsink:
		users(d)
		w = Watch(["127.0.0.1:%d" % d.odmr_port], sink)
		try:
			wait_waiting(d)
			submit(d.smtp_port, "s@client.test", ["x@other.example"],
			    sample_message("fm-other"))
			r = fetchmail_other(d, fsink.port, d.dir)
			check(r.returncode == 0, "fetchmail exit %d:\n%s"
			    % (r.returncode, r.out[-3000:]))
			check(msgids(fsink) == ["<fm-other@client.test>"],
			    "fetchmail's sink: %r\n%s" % (msgids(fsink), r.out[-2000:]))
			check(not sink.delivered(), "the watcher got other.example mail")
			# The watcher still waits, and still gets its own mail.
			wait_waiting(d)
			submit(d.smtp_port, "s@client.test", ["user@example.org"],
			    sample_message("fm-push"))
			wait_sink(sink, 1)
			w.stop()
		finally:
			w.kill()


class OldProvider:
	"""An RFC 2645 provider without XWAIT (fetchmail-era, Exim): EHLO,
	AUTH CRAM-MD5 (any answer), ATRN -> 453. Records what it is sent."""

	def __init__(self):
		self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		self.lsock.bind(("127.0.0.1", 0))
		self.lsock.listen(16)
		self.port = self.lsock.getsockname()[1]
		self.commands = []
		self.atrn_times = []
		self.stopped = False
		threading.Thread(target=self.loop, daemon=True).start()

	def loop(self):
		while not self.stopped:
			try:
				c, _ = self.lsock.accept()
			except OSError:
				return
			threading.Thread(target=self.serve, args=(c,), daemon=True).start()

	def serve(self, c):
		f = c.makefile("rb")
		try:
			c.sendall(b"220 old.test ESMTP\r\n")
			while True:
				line = f.readline()
				if not line:
					return
				cmd = line.strip().decode(errors="replace")
				self.commands.append(cmd)
				verb = cmd.split(" ")[0].upper()
				if verb == "EHLO":
					c.sendall(b"250-old.test\r\n250-AUTH CRAM-MD5\r\n"
					    b"250 ATRN\r\n")
				elif verb == "AUTH":
					c.sendall(b"334 " + base64.b64encode(
					    b"<1.2@old.test>") + b"\r\n")
					f.readline()
					c.sendall(b"235 2.7.0 ok\r\n")
				elif verb == "ATRN":
					self.atrn_times.append(time.time())
					c.sendall(b"453 4.3.0 You have no mail\r\n")
				elif verb == "QUIT":
					c.sendall(b"221 bye\r\n")
					return
				else:
					c.sendall(b"502 5.5.1 no\r\n")
		except OSError:
			pass
		finally:
			c.close()

	def close(self):
		self.stopped = True
		self.lsock.close()


def test_watch_polls_without_xwait():
	old = OldProvider()
	with Sink() as sink:
		w = Watch(["127.0.0.1:%d" % old.port], sink, "--interval", "1")
		try:
			deadline = time.time() + 15
			while len(old.atrn_times) < 3 and time.time() < deadline:
				time.sleep(0.1)
			check(len(old.atrn_times) >= 3, "odpull polled %d times in 15 s "
			    "with --interval 1:\n%s" % (len(old.atrn_times),
			    w.text()[-2000:]))
			gaps = [b - a for a, b in zip(old.atrn_times, old.atrn_times[1:])]
			print("    polls %s s apart" % ", ".join("%.1f" % g for g in gaps))
			check(not any(c.upper().startswith("XWAIT") for c in old.commands),
			    "XWAIT sent to a provider that does not offer it: %r"
			    % old.commands)
			w.stop()
		finally:
			w.kill()
			old.close()


def test_watch_two_providers():
	with daemon("push-two-a") as a, daemon("push-two-b") as b, \
	    Sink() as sink:
		users(a)
		users(b)
		# The two servers come from the -c file (repeated "server").
		w = Watch(["127.0.0.1:%d" % a.odmr_port,
		    "127.0.0.1:%d" % b.odmr_port], sink, conf=True)
		try:
			wait_waiting(a)
			wait_waiting(b)
			submit(a.smtp_port, "s@client.test", ["user@example.org"],
			    sample_message("two-a"))
			submit(b.smtp_port, "s@client.test", ["user@example.org"],
			    sample_message("two-b"))
			wait_sink(sink, 2)
			check(sorted(msgids(sink)) == ["<two-a@client.test>",
			    "<two-b@client.test>"], "sink: %r" % msgids(sink))
			wait_queue(a, queue_empty, "provider A empty")
			wait_queue(b, queue_empty, "provider B empty")
			w.stop()
		finally:
			w.kill()


def test_watch_provider_restart():
	with daemon("push-restart") as d, Sink() as sink:
		users(d)
		w = Watch(["127.0.0.1:%d" % d.odmr_port], sink)
		try:
			wait_waiting(d)
			submit(d.smtp_port, "s@client.test", ["user@example.org"],
			    sample_message("rs1"))
			wait_sink(sink, 1)
			wait_waiting(d)
			rc = d.stop()
			check(rc == 0, "provider exit %s on SIGTERM" % rc)
			time.sleep(1)
			d.start()
			# Mail that arrives before odpull is back waits for it.
			submit(d.smtp_port, "s@client.test", ["user@example.org"],
			    sample_message("rs2"))
			wait_sink(sink, 2, timeout=30)
			wait_waiting(d, timeout=30)
			submit(d.smtp_port, "s@client.test", ["user@example.org"],
			    sample_message("rs3"))
			wait_sink(sink, 3)
			wait_queue(d, queue_empty, "empty after the restart")
			time.sleep(0.5)
			check(sorted(msgids(sink)) == ["<rs1@client.test>",
			    "<rs2@client.test>", "<rs3@client.test>"],
			    "lost or duplicated: %r" % msgids(sink))
			check("trying again" in w.text(), "odpull did not report the "
			    "reconnection:\n" + w.text()[-2000:])
			w.stop()
		finally:
			w.kill()


def test_watch_sigterm_between_messages():
	"""SIGTERM during a pull: the message in transfer is finished, the
	rest stays at the provider, exit 0; nothing lost or duplicated."""
	def slow(t):
		time.sleep(0.4)
		return "250 2.0.0 ok"

	with daemon("push-term") as d, Sink(data_reply=slow) as sink:
		users(d)
		for i in range(5):
			submit(d.smtp_port, "s@client.test", ["user@example.org"],
			    sample_message("term%d" % i))
		w = Watch(["127.0.0.1:%d" % d.odmr_port], sink)
		try:
			wait_for(lambda: sink.txns, "the pull started", timeout=15)
			w.stop()
			got = msgids(sink)
			left = len(d.queue_json().get("messages", []))
			print("    SIGTERM during the pull: %d at the MTA, %d left at "
			    "the provider" % (len(got), left))
			check(len(set(got)) == len(got), "duplicates: %r" % got)
			check(1 <= len(got) < 5, "messages at the MTA: %r" % got)
			check(len(got) + left == 5, "lost: %d delivered + %d queued"
			    % (len(got), left))
			check(all(t.reply and t.reply.startswith("250")
			    for t in sink.txns if t.data is not None),
			    "a transaction was cut inside DATA:\n" + sink.dump())
		finally:
			w.kill()


# --- arrival webhooks ------------------------------------------------------------

def openssl(*args):
	r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE,
	    stderr=subprocess.STDOUT, timeout=30)
	check(r.returncode == 0, "openssl %s: %s" % (" ".join(args),
	    r.stdout.decode(errors="replace")))


def make_ca(dirpath, name, ip="127.0.0.1", ca_of=None):
	"""A CA and a server certificate for ip signed by it (or by the CA
	of ca_of, a name given before)."""
	ca_key = os.path.join(dirpath, (ca_of or name) + "-ca.key")
	ca = os.path.join(dirpath, (ca_of or name) + "-ca.pem")
	key = os.path.join(dirpath, name + "-srv.key")
	csr = os.path.join(dirpath, name + "-srv.csr")
	crt = os.path.join(dirpath, name + "-srv.pem")
	ext = os.path.join(dirpath, name + "-ext.cnf")
	with open(ext, "w") as f:
		f.write("subjectAltName=IP:%s\n" % ip)
	if ca_of is None:
		openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
		    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ca_key,
		    "-out", ca, "-subj", "/CN=%s test CA" % name, "-days", "2")
	openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
	    "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
	openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
	    "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
	for p in (ca, crt, key):
		os.chmod(p, 0o644)
	return ca, crt, key


class HookServer:
	"""HTTPS server (python http.server + ssl) recording the POSTs."""

	def __init__(self, cert, key, status=200):
		self.posts = []
		self.lock = threading.Lock()
		outer = self

		class Handler(http.server.BaseHTTPRequestHandler):
			def do_POST(self):
				n = int(self.headers.get("Content-Length", "0"))
				body = self.rfile.read(n)
				with outer.lock:
					outer.posts.append((time.time(), self.path,
					    self.headers.get("Content-Type"), body))
				self.send_response(status)
				self.send_header("Content-Length", "0")
				self.end_headers()

			def log_message(self, *a):
				pass

		self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
		ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
		ctx.load_cert_chain(cert, key)
		self.httpd.socket = ctx.wrap_socket(self.httpd.socket,
		    server_side=True)
		self.port = self.httpd.server_address[1]
		threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

	def bodies(self, path=None):
		with self.lock:
			return [json.loads(b) for _, p, _, b in self.posts
			    if path is None or p == path]

	def close(self):
		self.httpd.shutdown()
		self.httpd.server_close()


def stats(d):
	"""Counters from the daemon's control 'stats' answer."""
	out = {}
	for w in control(d, "stats").split()[1:]:
		k, _, v = w.rpartition("=")
		out[k] = int(v)
	return out


def wait_for(pred, what, timeout=15.0):
	deadline = time.time() + timeout
	while time.time() < deadline:
		if pred():
			return
		time.sleep(0.05)
	fail("never happened within %.0f s: %s" % (timeout, what))


def test_webhook():
	tmp = tempfile.mkdtemp(prefix="odrelay-hook-")
	os.chmod(tmp, 0o755)	# odrelayd runs as nobody under root
	ca, crt, key = make_ca(tmp, "hook")
	hook = HookServer(crt, key)
	extra = ("notify_url = https://127.0.0.1:%d/hook\n"
	    "notify_ca_file = %s\nnotify_interval = 4s\n" % (hook.port, ca))
	domains = DOMAINS.replace("[domain other.example]\nhold = yes",
	    "[domain other.example]\nhold = yes\n"
	    "notify_url = https://127.0.0.1:%d/other?x=1\n\n"
	    "[domain quiet.example]\nhold = yes\nnotify_url =\n" % hook.port)
	try:
		with PullFixture("push-hook", extra=extra, domains=domains,
		    start=False) as d:
			users(d)
			t0 = time.time()
			submit(d.smtp_port, "s@client.test", ["a@example.org"],
			    sample_message("hook1"))
			wait_for(lambda: len(hook.bodies("/hook")) >= 1, "first POST")
			print("    first webhook %.0f ms after the sender's 250"
			    % ((hook.posts[0][0] - t0) * 1000))
			b = hook.bodies("/hook")[0]
			check(b.get("event") == "arrival" and b.get("domain") ==
			    "example.org" and b.get("messages") == 1 and
			    b.get("bytes", 0) > 100 and abs(b.get("oldest", 0) - t0) < 60,
			    "webhook body: %r" % b)
			check(hook.posts[0][2] == "application/json",
			    "Content-Type %r" % hook.posts[0][2])
			# Two more within the interval: one later POST with all three.
			submit(d.smtp_port, "s@client.test", ["b@example.org"],
			    sample_message("hook2"))
			submit(d.smtp_port, "s@client.test", ["c@example.org"],
			    sample_message("hook3"))
			check(len(hook.bodies("/hook")) == 1, "a second POST inside "
			    "notify_interval: %r" % hook.bodies("/hook"))
			wait_for(lambda: len(hook.bodies("/hook")) >= 2, "POST after "
			    "notify_interval")
			check(hook.bodies("/hook")[1].get("messages") == 3,
			    "second POST: %r" % hook.bodies("/hook"))
			# A domain's own notify_url.
			submit(d.smtp_port, "s@client.test", ["x@other.example"],
			    sample_message("hook4"))
			wait_for(lambda: hook.bodies("/other?x=1"), "POST to the "
			    "domain's notify_url")
			check(hook.bodies("/other?x=1")[0].get("domain") ==
			    "other.example", "other: %r" % hook.bodies("/other?x=1"))
			# notify_url = (empty) in a section: no webhook there.
			submit(d.smtp_port, "s@client.test", ["q@quiet.example"],
			    sample_message("hook5"))
			time.sleep(1)
			check(not any(b.get("domain") == "quiet.example"
			    for b in hook.bodies()), "POST for a domain with "
			    "notify_url = (empty): %r" % hook.bodies())
			st = stats(d)
			check(st.get('odrelay_notifications_total{result="ok"}', 0) >= 3,
			    "notification metrics: %r" % st)
			time.sleep(0.5)
			check(len(hook.bodies("/hook")) == 2, "extra POSTs: %r"
			    % hook.bodies("/hook"))
	finally:
		hook.close()
		shutil.rmtree(tmp, ignore_errors=True)


def test_webhook_wrong_certificate_and_dead_endpoint():
	tmp = tempfile.mkdtemp(prefix="odrelay-hook-")
	os.chmod(tmp, 0o755)	# odrelayd runs as nobody under root
	ca, crt, key = make_ca(tmp, "hook")
	other_ca, _, _ = make_ca(tmp, "other")
	hook = HookServer(crt, key)
	# fourth.example: the right CA, but a certificate for another address.
	_, crt2, key2 = make_ca(tmp, "wrongname", ip="127.0.0.2", ca_of="hook")
	hook2 = HookServer(crt2, key2)
	# example.org: a server whose certificate the other CA did not sign.
	# other.example: an endpoint that accepts and never answers, and
	# third.example: nothing listening.
	hang = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
	hang.bind(("127.0.0.1", 0))
	hang.listen(64)
	dead = free_port()
	extra = ("notify_url = https://127.0.0.1:%d/hook\n"
	    "notify_ca_file = %s\n" % (hook.port, other_ca))
	domains = DOMAINS.replace("[domain other.example]\nhold = yes",
	    "[domain other.example]\nhold = yes\n"
	    "notify_url = https://127.0.0.1:%d/\n\n"
	    "[domain third.example]\nhold = yes\n"
	    "notify_url = https://127.0.0.1:%d/\n\n"
	    "[domain fourth.example]\nhold = yes\n"
	    "notify_url = https://127.0.0.1:%d/\nnotify_ca_file = %s\n"
	    % (hang.getsockname()[1], dead, hook2.port, ca))
	try:
		with PullFixture("push-hookbad", extra=extra, domains=domains,
		    start=False) as d:
			users(d)
			times = []
			for i in range(3):
				for rcpt in ("a@example.org", "x@other.example",
				    "y@third.example"):
					t0 = time.time()
					submit(d.smtp_port, "s@client.test", [rcpt],
					    sample_message("bad%d%s" % (i, rcpt[0])))
					times.append(time.time() - t0)
			print("    9 messages accepted with failing webhooks, slowest "
			    "%.0f ms" % (max(times) * 1000))
			submit(d.smtp_port, "s@client.test", ["z@fourth.example"],
			    sample_message("badname"))
			# Refused certificate and dead port: failed and retried.
			wait_for(lambda: stats(d).get(
			    'odrelay_notifications_total{result="failed"}', 0) >= 4,
			    "failures counted and retried")
			check(not hook.posts, "POST accepted with a certificate from "
			    "another CA: %r" % hook.posts)
			wait_for(lambda: "notify: domain=fourth.example, result=failed"
			    in d.log_text(), "certificate for another address refused")
			check(not hook2.posts, "POST accepted with a certificate for "
			    "another address: %r" % hook2.posts)
			log = d.log_text()
			check("notify: domain=example.org, result=failed" in log,
			    "no failure logged for the wrong certificate")
			check("notify: domain=third.example, result=failed" in log and
			    "retry in 2s" in log, "dead endpoint not retried with "
			    "backoff:\n" + "\n".join(l for l in log.splitlines()
			    if "notify" in l)[-2000:])
			j = d.queue_json()
			check(len(j.get("messages", [])) == 10, "queue: %d messages"
			    % len(j.get("messages", [])))
	finally:
		hook.close()
		hook2.close()
		hang.close()
		shutil.rmtree(tmp, ignore_errors=True)


TESTS = [
	test_xwait_protocol,
	test_xwait_quit_and_garbage,
	test_many_waiting_one_address,
	test_waiting_list_many_domains,
	test_watch_receives,
	test_fetchmail_with_waiting_sessions,
	test_watch_polls_without_xwait,
	test_watch_two_providers,
	test_watch_provider_restart,
	test_watch_sigterm_between_messages,
	test_webhook,
	test_webhook_wrong_certificate_and_dead_endpoint,
]

if __name__ == "__main__":
	run_tests(TESTS, "push")
