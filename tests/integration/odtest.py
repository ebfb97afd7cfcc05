"""odtest - harness for odrelay's integration tests.

Starts the real odrelayd on loopback ports with a temporary configuration
and queue, talks to it with raw sockets / smtplib / swaks / openssl, and
runs odrelayctl against the same configuration.  Python 3 stdlib only.

Conventions: a test script builds a list of test functions and calls
run_tests(); each function raises Failure (via check()/fail()) or Skip.
A script exits 0 when every test passed (or was skipped), 1 when any
failed, 77 when the daemon binary is missing.  On failure the daemon's
log tail is printed and the temporary directory is kept.
"""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77


class Failure(Exception):
	pass


class Skip(Exception):
	pass


def fail(msg):
	raise Failure(msg)


def check(cond, msg):
	if not cond:
		raise Failure(msg)


def builddir():
	d = os.environ.get("top_builddir")
	if d:
		return os.path.abspath(d)
	# Run by hand from the source tree: assume an in-tree build.
	return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def srcdir():
	d = os.environ.get("top_srcdir")
	if d:
		return os.path.abspath(d)
	return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def prog(name):
	return os.path.join(builddir(), name)


def fetchmail_argv(argv):
	"""fetchmail in ETRN/ODMR mode insists on qualifying this host's name
	(getaddrinfo of gethostname() unless it has a dot), which fails in a
	container or chroot without /etc/hosts. There, run it in its own UTS
	namespace under a dotted name (needs root or user namespaces); say
	plainly when neither is possible."""
	name = socket.gethostname()
	if "." in name:
		return argv
	try:
		socket.getaddrinfo(name, None)
		return argv
	except OSError:
		pass
	unshare = shutil.which("unshare")
	wrap = ["sh", "-c", 'hostname fetchmail.test && exec "$@"', "sh"]
	if unshare is not None:
		for opts in (["-u"], ["-r", "-u"]):
			r = subprocess.run([unshare] + opts + ["true"],
			    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
			if r.returncode == 0:
				return [unshare] + opts + wrap + list(argv)
	raise Skip("fetchmail needs this host's name (%s) to resolve: add it "
	    "to /etc/hosts, or run as root so the test can give fetchmail a "
	    "UTS namespace" % name)


def have_daemon():
	return os.access(prog("odrelayd"), os.X_OK)


_ports_given = set()


def free_port(family=socket.AF_INET, host="127.0.0.1"):
	"""A port the kernel considers free right now (bind to 0, close),
	never one this process was given before: the kernel may hand the
	same ephemeral port out twice in a row, and two listeners of one
	daemon on one port make it exit at start-up."""
	for _ in range(100):
		s = socket.socket(family, socket.SOCK_STREAM)
		try:
			s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
			s.bind((host, 0))
			port = s.getsockname()[1]
		finally:
			s.close()
		if port not in _ports_given:
			_ports_given.add(port)
			return port
	return port


def have_ipv6_loopback():
	try:
		s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
		s.bind(("::1", 0))
		s.close()
		return True
	except OSError:
		return False


def make_cert(dirpath):
	"""Self-signed cert+key for CN=localhost, made now (never committed)."""
	cert = os.path.join(dirpath, "cert.pem")
	key = os.path.join(dirpath, "key.pem")
	r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
	    "-nodes", "-subj", "/CN=localhost", "-days", "2",
	    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
	    "-keyout", key, "-out", cert],
	    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
	if r.returncode != 0:
		raise Skip("openssl req failed: " + r.stdout.decode(errors="replace"))
	os.chmod(key, 0o644)	# the daemon may read it after dropping privileges
	return cert, key


DEFAULT_DOMAINS = """
[domain example.org]
hold = yes

[domain list.example]
hold = yes
recipients = alice@list.example, bob@list.example
"""


class Daemon:
	"""One odrelayd instance with its own temporary directory."""

	def __init__(self, name, extra="", domains=DEFAULT_DOMAINS, tls=False,
	    ipv6=False):
		self.name = name
		self.dir = tempfile.mkdtemp(prefix="odrelay-integ-%s-" % name)
		os.chmod(self.dir, 0o755)
		self.smtp_port = free_port()
		self.odmr_port = free_port()
		self.smtp6_port = free_port(socket.AF_INET6, "::1") if ipv6 else None
		self.conf = os.path.join(self.dir, "odrelay.conf")
		self.queue_dir = os.path.join(self.dir, "queue")
		self.sock = os.path.join(self.dir, "control.sock")
		self.passwd = os.path.join(self.dir, "passwd")
		self.log = os.path.join(self.dir, "odrelayd.log")
		self.proc = None
		self.expected_exit = True
		self.logf = None
		self.cert = self.key = None
		if tls:
			self.cert, self.key = make_cert(self.dir)
		with open(self.passwd, "w") as f:
			f.write("# no ATRN users in these tests\n")
		os.chmod(self.passwd, 0o600)
		listen = "127.0.0.1:%d" % self.smtp_port
		if ipv6:
			listen += " [::1]:%d" % self.smtp6_port
		lines = [
			"hostname = relay.test",
			"queue_dir = " + self.queue_dir,
			"smtp_listen = " + listen,
			"odmr_listen = 127.0.0.1:%d" % self.odmr_port,
			"control_socket = " + self.sock,
			"passwd_file = " + self.passwd,
			"log_level = debug",
			"dns_servers = 127.0.0.1:%d" % free_port(),
		]
		if os.geteuid() == 0:
			# As root odrelayd drops to run_as_user; give that user
			# the temporary directory.
			lines.append("run_as_user = nobody")
		if tls:
			lines.append("tls_cert_file = " + self.cert)
			lines.append("tls_key_file = " + self.key)
		self.text = "\n".join(lines) + "\n" + extra + "\n" + domains
		with open(self.conf, "w") as f:
			f.write(self.text)
		os.chmod(self.conf, 0o644)
		if os.geteuid() == 0:
			pw = pwd.getpwnam("nobody")
			for p in (self.dir, self.passwd):
				os.chown(p, pw.pw_uid, pw.pw_gid)

	def start(self, wait=10.0):
		check(self.proc is None or self.proc.poll() is not None,
		    "daemon already running")
		self.logf = open(self.log, "ab")
		self.logf.write(b"==== start %s\n" % time.strftime("%H:%M:%S").encode())
		self.logf.flush()
		self.expected_exit = False
		self.proc = subprocess.Popen([prog("odrelayd"), "-f", "-c", self.conf],
		    stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf)
		deadline = time.time() + wait
		while time.time() < deadline:
			if self.proc.poll() is not None:
				fail("odrelayd exited with status %d at startup"
				    % self.proc.returncode)
			try:
				s = socket.create_connection(("127.0.0.1", self.smtp_port),
				    timeout=1)
				s.close()
				# The control socket appears after the listeners.
				for _ in range(50):
					if os.path.exists(self.sock):
						break
					time.sleep(0.02)
				return self
			except OSError:
				time.sleep(0.05)
		fail("odrelayd did not accept on port %d within %.0f s"
		    % (self.smtp_port, wait))

	def running(self):
		return self.proc is not None and self.proc.poll() is None

	def stop(self, sig=signal.SIGTERM, bound=10.0):
		"""Signal the daemon; return its exit status (SIGKILL after bound)."""
		if self.proc is None:
			return None
		self.expected_exit = True
		if self.proc.poll() is None:
			try:
				self.proc.send_signal(sig)
			except ProcessLookupError:
				pass
			try:
				self.proc.wait(bound)
			except subprocess.TimeoutExpired:
				self.proc.kill()
				self.proc.wait(5)
				self.logf.close()
				raise Failure("odrelayd did not exit within %.0f s of "
				    "signal %d (killed)" % (bound, sig))
		if self.logf:
			self.logf.close()
			self.logf = None
		return self.proc.returncode

	def kill(self):
		return self.stop(signal.SIGKILL, 5.0)

	def log_text(self):
		try:
			with open(self.log, "rb") as f:
				return f.read().decode(errors="replace")
		except OSError:
			return ""

	def cleanup(self, keep):
		if self.running():
			try:
				self.stop(bound=5.0)
			except Failure:
				pass
		if not keep:
			shutil.rmtree(self.dir, ignore_errors=True)

	# --- odrelayctl ---------------------------------------------------
	def ctl(self, *args, input=None, timeout=30):
		r = subprocess.run([prog("odrelayctl"), "-c", self.conf] + list(args),
		    input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
		    timeout=timeout)
		r.out = r.stdout.decode(errors="replace")
		r.err = r.stderr.decode(errors="replace")
		return r

	def ctl_ok(self, *args, **kw):
		r = self.ctl(*args, **kw)
		check(r.returncode == 0, "odrelayctl %s: exit %d\nstdout: %s\nstderr: %s"
		    % (" ".join(args), r.returncode, r.out[:2000], r.err[:2000]))
		return r

	def queue_json(self):
		r = self.ctl_ok("queue", "--json")
		try:
			return json.loads(r.out)
		except ValueError as e:
			fail("odrelayctl queue --json is not JSON (%s):\n%s" % (e, r.out[:2000]))

	def queue_ids(self):
		"""Every queue id in the JSON listing."""
		return set(json_ids(self.queue_json()))

	def body(self, qid):
		"""The raw stored message (odrelayctl show --body ID)."""
		r = self.ctl("show", "--body", qid)
		if r.returncode != 0:
			r2 = self.ctl("show", qid, "--body")
			if r2.returncode == 0:
				return r2.stdout
			fail("odrelayctl show --body %s: exit %d: %s%s (show ID --body: "
			    "exit %d: %s)" % (qid, r.returncode, r.err.strip(),
			    r.out[:300], r2.returncode, r2.err.strip()))
		return r.stdout


ID_KEYS = ("id", "queue_id", "qid")


def json_messages(obj):
	"""Every dict in a JSON document that carries a queue id."""
	out = []
	if isinstance(obj, dict):
		if any(k in obj and isinstance(obj[k], str) for k in ID_KEYS):
			out.append(obj)
		for v in obj.values():
			out.extend(json_messages(v))
	elif isinstance(obj, list):
		for v in obj:
			out.extend(json_messages(v))
	return out


def json_ids(obj):
	ids = []
	for m in json_messages(obj):
		for k in ID_KEYS:
			if isinstance(m.get(k), str):
				ids.append(m[k])
				break
	return ids


def json_find(obj, qid):
	for m in json_messages(obj):
		if any(m.get(k) == qid for k in ID_KEYS):
			return m
	return None


QUEUED_RE = re.compile(r"queued as ([A-Za-z0-9]+)")


def queued_id(text):
	m = QUEUED_RE.search(text)
	return m.group(1) if m else None


# --- raw SMTP client ---------------------------------------------------

class Conn:
	"""Line-level SMTP client on a raw socket, for protocol tests."""

	def __init__(self, port, host="127.0.0.1", timeout=10.0, family=None):
		if family is None:
			family = socket.AF_INET6 if ":" in host else socket.AF_INET
		self.s = socket.socket(family, socket.SOCK_STREAM)
		self.s.settimeout(timeout)
		self.s.connect((host, port))
		self.buf = b""
		self.transcript = []

	def send(self, data):
		if isinstance(data, str):
			data = data.encode()
		self.transcript.append(b"C: " + data[:400])
		self.s.sendall(data)

	def cmd(self, line):
		"""Send one command line, return its reply."""
		self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
		return self.reply()

	def readline(self):
		while b"\r\n" not in self.buf:
			try:
				d = self.s.recv(65536)
			except socket.timeout:
				raise Failure("timeout waiting for a reply; transcript:\n"
				    + self.dump())
			if not d:
				return None
			self.buf += d
		line, self.buf = self.buf.split(b"\r\n", 1)
		self.transcript.append(b"S: " + line)
		return line.decode(errors="replace")

	def reply(self):
		"""(code, text of all lines) or (None, '') on EOF."""
		lines = []
		while True:
			line = self.readline()
			if line is None:
				if lines:
					fail("connection closed inside a multi-line reply")
				return None, ""
			check(len(line) >= 3 and line[:3].isdigit(),
			    "malformed reply line %r" % line)
			lines.append(line)
			if len(line) == 3 or line[3] == " ":
				return int(line[:3]), "\n".join(lines)
			check(line[3] == "-", "malformed reply line %r" % line)

	def expect(self, code, line=None, what=""):
		"""Send line (if given) and check the reply code (int or prefix)."""
		c, t = self.cmd(line) if line is not None else self.reply()
		ok = (c == code) if isinstance(code, int) else (
		    c is not None and str(c).startswith(str(code)))
		check(ok, "%s%s: expected %s, got %s %r\ntranscript:\n%s" % (
		    what, (" after " + repr(line)) if line else "", code, c, t,
		    self.dump()))
		return t

	def greet_ehlo(self, name="client.test"):
		self.expect(220, what="greeting")
		return self.expect(250, "EHLO " + name)

	def pending(self, wait=0.5):
		"""Whatever the server sends within wait seconds (b'' on EOF)."""
		self.s.settimeout(wait)
		data = self.buf
		self.buf = b""
		try:
			while True:
				d = self.s.recv(65536)
				if not d:
					break
				data += d
		except (socket.timeout, OSError):
			pass
		self.s.settimeout(10.0)
		return data

	def dump(self):
		return "\n".join(x.decode(errors="replace").rstrip()
		    for x in self.transcript[-40:])

	def close(self):
		try:
			self.s.close()
		except OSError:
			pass


def send_message(port, sender, rcpts, data, ehlo="client.test", host="127.0.0.1"):
	"""One transaction on a new connection; returns (code, reply text).

	data is the message with CRLF line endings, not dot-stuffed."""
	c = Conn(port, host)
	try:
		c.greet_ehlo(ehlo)
		c.expect(250, "MAIL FROM:<%s>" % sender)
		for r in rcpts:
			c.expect(250, "RCPT TO:<%s>" % r)
		c.expect(354, "DATA")
		c.send(dot_stuff(data) + b".\r\n")
		code, text = c.reply()
		c.cmd("QUIT")
		return code, text
	finally:
		c.close()


def dot_stuff(data):
	if isinstance(data, str):
		data = data.encode()
	if not data.endswith(b"\r\n"):
		data += b"\r\n"
	out = []
	for line in data.split(b"\r\n")[:-1]:
		out.append(b"." + line if line.startswith(b".") else line)
	return b"\r\n".join(out) + b"\r\n"


def run(cmd, timeout=30, input=None):
	r = subprocess.run(cmd, input=input, stdout=subprocess.PIPE,
	    stderr=subprocess.STDOUT, timeout=timeout)
	r.out = r.stdout.decode(errors="replace")
	return r


def swaks(port, to, *extra, frm="sender@client.test", timeout=30):
	return run(["swaks", "--server", "127.0.0.1", "--port", str(port),
	    "--to", to, "--from", frm, "--helo", "client.test",
	    "--timeout", "10"] + list(extra), timeout=timeout)


# --- runner -------------------------------------------------------------

def run_tests(tests, title):
	"""Run test functions; each takes no arguments. Exit with the result."""
	if not have_daemon():
		print("SKIP %s: %s not built" % (title, prog("odrelayd")))
		sys.exit(SKIP)
	failed = 0
	passed = 0
	t0 = time.time()
	for t in tests:
		name = t.__name__
		start = time.time()
		try:
			t()
			passed += 1
			print("PASS %s.%s (%.1fs)" % (title, name, time.time() - start),
			    flush=True)
		except Skip as e:
			print("SKIP %s.%s: %s" % (title, name, e), flush=True)
		except Failure as e:
			failed += 1
			print("FAIL %s.%s: %s" % (title, name, e), flush=True)
		except Exception:
			failed += 1
			print("FAIL %s.%s: unexpected exception\n%s"
			    % (title, name, traceback.format_exc()), flush=True)
	print("%s: %d passed, %d failed (%.1fs)" % (title, passed, failed,
	    time.time() - t0), flush=True)
	sys.exit(1 if failed else 0)


class Fixture:
	"""Context manager: a Daemon that is stopped, and its log shown and
	its directory kept, when the test body fails."""

	def __init__(self, *a, start=True, **kw):
		self.d = Daemon(*a, **kw)
		self.start = start

	def __enter__(self):
		if self.start:
			try:
				self.d.start()
			except BaseException:
				self._show()
				self.d.cleanup(keep=True)
				raise
		return self.d

	def _show(self):
		txt = self.d.log_text()
		san = sanitizer_report(txt)
		if san:
			print("---- odrelayd log (%s): sanitizer report:" % self.d.log)
			print(san)
		print("---- odrelayd log (%s), last 60 lines:" % self.d.log)
		print("\n".join(txt.splitlines()[-60:]))
		print("---- config %s:\n%s" % (self.d.conf, self.d.text))

	def _final_checks(self):
		"""A passing test also needs a daemon that did not die on its
		own, stops cleanly (exit 0) and logged no sanitizer report."""
		d = self.d
		if d.proc is not None:
			if d.running():
				rc = d.stop()
				check(rc == 0, "odrelayd exited with status %s on SIGTERM" % rc)
			elif not d.expected_exit:
				fail("odrelayd died during the test (status %s)"
				    % d.proc.returncode)
		san = sanitizer_report(d.log_text())
		check(san is None, "sanitizer report in the daemon log:\n%s"
		    % (san or "")[:3000])

	def __exit__(self, et, ev, tb):
		if et is None:
			try:
				self._final_checks()
			except Failure:
				self._show()
				self.d.cleanup(keep=True)
				print("---- kept %s" % self.d.dir)
				raise
		if et is not None and et is not Skip:
			self._show()
			self.d.cleanup(keep=True)
			print("---- kept %s" % self.d.dir)
		else:
			self.d.cleanup(keep=False)
		return False


SANITIZER_RE = re.compile(r"^=+\n.*(ERROR: (Address|Leak|Thread|Memory)Sanitizer)"
    r"|runtime error:", re.M)


def sanitizer_report(log):
	"""The first ASan/LSan/UBSan report in a log, or None."""
	m = SANITIZER_RE.search(log)
	if m is None:
		return None
	return log[m.start():m.start() + 6000]
