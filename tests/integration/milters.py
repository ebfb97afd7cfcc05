"""milters - filters for the milter tests, started and stopped by PID.

TestFilter: tests/integration/milter/testfilter.c, built here with cc
and libmilter (libmilter-dev).  Hostile: a scripted milter in Python
that misbehaves on purpose.
"""

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

from odtest import Skip, builddir, fail, free_port, srcdir


def _die_with_parent():
	try:
		import ctypes
		libc = ctypes.CDLL(None, use_errno=True)
		libc.prctl(1, 15)	# PR_SET_PDEATHSIG, SIGTERM
	except (OSError, AttributeError):
		pass


def wait_port(port, proc, what, bound=10.0, logf=None):
	deadline = time.time() + bound
	while time.time() < deadline:
		if proc.poll() is not None:
			fail("%s exited with status %d%s" % (what, proc.returncode,
			    ("\n" + open(logf, errors="replace").read()[-3000:])
			    if logf else ""))
		try:
			socket.create_connection(("127.0.0.1", port), timeout=1).close()
			return
		except OSError:
			time.sleep(0.05)
	fail("%s did not listen on port %d within %.0f s" % (what, port, bound))


def build_testfilter():
	"""The libmilter test filter, built once per build directory."""
	src = os.path.join(srcdir(), "tests", "integration", "milter",
	    "testfilter.c")
	out = os.path.join(builddir(), "tests", "milter-testfilter")
	if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
		return out
	if not os.path.exists("/usr/include/libmilter/mfapi.h"):
		raise Skip("libmilter-dev not installed (sh contrib/install-deps.sh)")
	os.makedirs(os.path.dirname(out), exist_ok=True)
	r = subprocess.run(["cc", "-O2", "-o", out + ".tmp", src, "-lmilter",
	    "-lpthread"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
	if r.returncode != 0:
		fail("building testfilter failed:\n" + r.stdout.decode(errors="replace"))
	os.rename(out + ".tmp", out)
	return out


class TestFilter:
	"""testfilter on 127.0.0.1:port; mode "accept" for accept-all."""

	def __init__(self, mode=None, unix=False):
		exe = build_testfilter()
		self.port = free_port()
		self.dir = tempfile.mkdtemp(prefix="odrelay-milter-")
		os.chmod(self.dir, 0o755)	# the daemon may run as nobody
		self.path = os.path.join(self.dir, "filter.sock") if unix else None
		self.log = os.path.join(self.dir, "testfilter.log")
		self.logf = open(self.log, "wb")
		args = [exe, "unix:" + self.path if unix else
		    "inet:%d@127.0.0.1" % self.port]
		if mode:
			args.append(mode)

		def child():
			_die_with_parent()
			os.umask(0)	# a socket anyone may connect to
		self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
		    stdout=self.logf, stderr=self.logf, preexec_fn=child)
		if unix:
			deadline = time.time() + 10
			while not os.path.exists(self.path):
				if self.proc.poll() is not None or time.time() > deadline:
					fail("testfilter did not create %s\n%s"
					    % (self.path, self.log_text()))
				time.sleep(0.05)
		else:
			wait_port(self.port, self.proc, "testfilter", logf=self.log)

	@property
	def spec(self):
		if self.path:
			return "unix:" + self.path
		return "inet:127.0.0.1:%d" % self.port

	def log_text(self):
		try:
			with open(self.log, "rb") as f:
				return f.read().decode(errors="replace")
		except OSError:
			return ""

	def stop(self):
		if self.proc.poll() is None:
			# libmilter polls for its stop flag every few seconds
			self.proc.terminate()
			try:
				self.proc.wait(1)
			except subprocess.TimeoutExpired:
				self.proc.kill()
				self.proc.wait(5)
		if not self.logf.closed:
			self.logf.close()

	def __enter__(self):
		return self

	def __exit__(self, et, ev, tb):
		if et is not None:
			print("---- testfilter log:\n" + self.log_text()[-3000:])
		self.stop()
		shutil.rmtree(self.dir, ignore_errors=True)
		return False


# --- a hostile milter ----------------------------------------------------

def _pkt(cmd, data=b""):
	return struct.pack(">I", len(data) + 1) + cmd + data


class Hostile:
	"""A milter on 127.0.0.1:port whose connections follow a script.

	modes: one mode per connection in turn (the last one repeats):
	  "good"      speaks the protocol, continues, accepts at the end
	  "garbage"   answers the negotiation with random bytes
	  "huge"      announces a 4 GiB reply
	  "silent"    reads everything, never answers
	  "close-body" behaves until the first body chunk, then closes
	  "flood"     answers the end of message with 5 MB of header changes
	  "skip"      answers the first body chunk with skip, the end of the
	              message with progress twice, 0.6 s apart, then accept;
	              counts the body chunks that still arrive in body_after_skip
	"""

	def __init__(self, modes):
		self.modes = list(modes)
		self.seen = []
		self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		self.sock.bind(("127.0.0.1", 0))
		self.sock.listen(16)
		self.port = self.sock.getsockname()[1]
		self.stopping = False
		self.body_after_skip = 0
		self.conns = []
		self.t = threading.Thread(target=self._accept, daemon=True)
		self.t.start()

	@property
	def spec(self):
		return "inet:127.0.0.1:%d" % self.port

	def _accept(self):
		while not self.stopping:
			try:
				c, _ = self.sock.accept()
			except OSError:
				return
			mode = self.modes.pop(0) if len(self.modes) > 1 else self.modes[0]
			self.seen.append(mode)
			self.conns.append(c)
			threading.Thread(target=self._serve, args=(c, mode),
			    daemon=True).start()

	def _read(self, c):
		hdr = b""
		while len(hdr) < 4:
			d = c.recv(4 - len(hdr))
			if not d:
				return None, None
			hdr += d
		n = struct.unpack(">I", hdr)[0]
		data = b""
		while len(data) < n:
			d = c.recv(min(65536, n - len(data)))
			if not d:
				return None, None
			data += d
		return data[:1], data[1:]

	def _serve(self, c, mode):
		skipped = False
		try:
			while True:
				cmd, data = self._read(c)
				if cmd is None:
					return
				if mode == "silent":
					continue
				if cmd == b"O":
					if mode == "garbage":
						c.sendall(os.urandom(64))
						continue
					if mode == "huge":
						c.sendall(b"\xff\xff\xff\xffO")
						continue
					c.sendall(_pkt(b"O", struct.pack(">III", 6, 0, 0)))
				elif cmd in (b"D", b"A"):
					continue
				elif cmd == b"Q":
					return
				elif cmd == b"B" and mode == "close-body":
					c.close()
					return
				elif cmd == b"B" and mode == "skip":
					if skipped:
						self.body_after_skip += 1
					skipped = True
					c.sendall(_pkt(b"s"))
				elif cmd == b"E" and mode == "skip":
					# 1.2 s in all, progress every 0.6 s: past a 1 s
					# timeout only if progress restarts it
					c.sendall(_pkt(b"p"))
					time.sleep(0.6)
					c.sendall(_pkt(b"p"))
					time.sleep(0.6)
					c.sendall(_pkt(b"a"))
				elif cmd == b"E":
					if mode == "flood":
						v = b"x" * (1024 * 1024 - 64)
						for _ in range(5):
							c.sendall(_pkt(b"h", b"X-Flood\0" + v + b"\0"))
					c.sendall(_pkt(b"a"))
				else:
					c.sendall(_pkt(b"c"))
		except OSError:
			return
		finally:
			try:
				c.close()
			except OSError:
				pass

	def stop(self):
		self.stopping = True
		self.sock.close()
		for c in self.conns:
			try:
				c.close()
			except OSError:
				pass

	def __enter__(self):
		return self

	def __exit__(self, et, ev, tb):
		self.stop()
		return False


# --- rspamd and OpenDKIM ----------------------------------------------------

def _which(*names):
	for n in names:
		w = shutil.which(n) or (os.path.exists(n) and n)
		if w:
			return w
	return None


class _Proc:
	def log_text(self):
		try:
			with open(self.log, "rb") as f:
				return f.read().decode(errors="replace")
		except OSError:
			return ""

	def stop(self):
		if self.proc is not None and self.proc.poll() is None:
			self.proc.terminate()
			try:
				self.proc.wait(5)
			except subprocess.TimeoutExpired:
				self.proc.kill()
				self.proc.wait(5)
		if not self.logf.closed:
			self.logf.close()

	def __enter__(self):
		return self

	def __exit__(self, et, ev, tb):
		if et is not None:
			print("---- %s log:\n%s" % (self.name, self.log_text()[-3000:]))
		self.stop()
		shutil.rmtree(self.dir, ignore_errors=True)
		return False

	@property
	def spec(self):
		return "inet:127.0.0.1:%d" % self.port


RSPAMD_CONF = """.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
    type = "console";
    level = "notice";
}
worker "rspamd_proxy" {
    bind_socket = "127.0.0.1:%d";
    milter = yes;
    timeout = 120s;
    count = 1;
    upstream "local" {
        default = yes;
        self_scan = yes;
    }
}
"""

# No network: DNS goes to a dead port and fails at once; modules that
# only ask the network are off; headers are added for local clients too.
RSPAMD_LOCAL = {
	"options.inc": "disable_hyperscan = true;\n"
	    "dns {\n  nameserver = [\"127.0.0.1:%d\"];\n  timeout = 0.2s;\n"
	    "  retransmits = 1;\n}\n",
	"milter_headers.conf": "skip_local = false;\nskip_authenticated = false;\n"
	    "use = [\"x-spamd-result\", \"x-rspamd-queue-id\", "
	    "\"x-rspamd-server\"];\n",
	"fuzzy_check.conf": "enabled = false;\n",
	"rbl.conf": "enabled = false;\n",
	"url_reputation.conf": "enabled = false;\n",
	"phishing.conf": "enabled = false;\n",
	"asn.conf": "enabled = false;\n",
	"emails.conf": "enabled = false;\n",
}


class Rspamd(_Proc):
	"""rspamd's proxy worker in milter mode (self-scan), in the
	foreground with its configuration in a temporary directory.  Its
	compiled regexp cache lives in the build directory: only the first
	start is slow, and it is bounded."""

	name = "rspamd"

	def __init__(self, bound=70.0):
		exe = _which("rspamd", "/usr/bin/rspamd")
		if exe is None:
			fail("rspamd not found (sh contrib/install-deps.sh)")
		self.port = free_port()
		self.dir = tempfile.mkdtemp(prefix="odrelay-rspamd-")
		local = os.path.join(self.dir, "local.d")
		os.makedirs(local)
		os.makedirs(os.path.join(self.dir, "run"))
		cache = os.path.join(builddir(), "tests", "rspamd-cache")
		os.makedirs(cache, exist_ok=True)
		with open(os.path.join(self.dir, "rspamd.conf"), "w") as f:
			f.write(RSPAMD_CONF % self.port)
		for name, text in RSPAMD_LOCAL.items():
			with open(os.path.join(local, name), "w") as f:
				f.write(text % free_port() if "%d" in text else text)
		self.log = os.path.join(self.dir, "rspamd.log")
		self.logf = open(self.log, "wb")
		args = [exe, "-f", "-c", os.path.join(self.dir, "rspamd.conf"),
		    "--var=LOCAL_CONFDIR=" + self.dir, "--var=DBDIR=" + cache,
		    "--var=RUNDIR=" + os.path.join(self.dir, "run"),
		    "--var=LOGDIR=" + self.dir]
		if os.geteuid() == 0:
			args.append("--insecure")	# run as root in CI
		self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
		    stdout=self.logf, stderr=self.logf, preexec_fn=_die_with_parent)
		try:
			wait_port(self.port, self.proc, "rspamd", bound=bound,
			    logf=self.log)
		except BaseException:
			print("---- rspamd log:\n" + self.log_text()[-3000:])
			self.stop()
			raise


class OpenDKIM(_Proc):
	"""OpenDKIM signing for `domain` with a key made by opendkim-genkey;
	verify() checks a stored message with OpenDKIM's own test mode
	(-t), the public key given through TestPublicKeys."""

	name = "opendkim"

	def __init__(self, domain, selector="test", canon="relaxed/simple"):
		exe = _which("opendkim", "/usr/sbin/opendkim")
		gen = _which("opendkim-genkey", "/usr/sbin/opendkim-genkey")
		if exe is None or gen is None:
			fail("opendkim not found (sh contrib/install-deps.sh)")
		self.exe = exe
		self.port = free_port()
		self.dir = tempfile.mkdtemp(prefix="odrelay-dkim-")
		r = subprocess.run([gen, "-D", self.dir, "-d", domain, "-s",
		    selector], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
		if r.returncode != 0:
			fail("opendkim-genkey: " + r.stdout.decode(errors="replace"))
		import re
		with open(os.path.join(self.dir, selector + ".txt")) as f:
			rec = "".join(re.findall(r'"([^"]*)"', f.read()))
		with open(os.path.join(self.dir, "keys"), "w") as f:
			f.write("%s._domainkey.%s %s\n" % (selector, domain, rec))
		user = "UserID root\n" if os.geteuid() == 0 else ""
		with open(os.path.join(self.dir, "sign.conf"), "w") as f:
			f.write("Mode s\nDomain %s\nSelector %s\nKeyFile %s\n"
			    "Socket inet:%d@127.0.0.1\nBackground no\n"
			    "Canonicalization %s\nSyslog no\nLogWhy yes\n"
			    "RequireSafeKeys no\nPidFile %s\n%s"
			    % (domain, selector, os.path.join(self.dir, selector +
			    ".private"), self.port, canon,
			    os.path.join(self.dir, "pid"), user))
		with open(os.path.join(self.dir, "verify.conf"), "w") as f:
			f.write("Mode v\nSyslog no\nTestPublicKeys %s\n%s"
			    % (os.path.join(self.dir, "keys"), user))
		self.log = os.path.join(self.dir, "opendkim.log")
		self.logf = open(self.log, "wb")
		self.proc = subprocess.Popen([exe, "-f", "-x",
		    os.path.join(self.dir, "sign.conf")], stdin=subprocess.DEVNULL,
		    stdout=self.logf, stderr=self.logf, preexec_fn=_die_with_parent)
		wait_port(self.port, self.proc, "opendkim", logf=self.log)

	def verify(self, message):
		"""OpenDKIM's verdict on message (bytes): its output line."""
		path = os.path.join(self.dir, "check.eml")
		with open(path, "wb") as f:
			f.write(message)
		r = subprocess.run([self.exe, "-x", os.path.join(self.dir,
		    "verify.conf"), "-t", path], stdout=subprocess.PIPE,
		    stderr=subprocess.STDOUT, timeout=30)
		return r.stdout.decode(errors="replace")
