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

	def __init__(self, mode=None):
		exe = build_testfilter()
		self.port = free_port()
		self.dir = tempfile.mkdtemp(prefix="odrelay-milter-")
		self.log = os.path.join(self.dir, "testfilter.log")
		self.logf = open(self.log, "wb")
		args = [exe, "inet:%d@127.0.0.1" % self.port]
		if mode:
			args.append(mode)
		self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
		    stdout=self.logf, stderr=self.logf, preexec_fn=_die_with_parent)
		wait_port(self.port, self.proc, "testfilter", logf=self.log)

	@property
	def spec(self):
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
				elif cmd == b"E":
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
