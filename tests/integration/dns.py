"""dns - a dnsmasq name server on a loopback port for odrelay's tests.

Serves only the records given (MX, A, raw RRs such as a null MX); no
upstream servers, no /etc/hosts, no configuration file.  Started and
stopped by PID.
"""

import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import time

from odtest import Failure, fail, free_port


def dnsmasq_path():
	for p in ("dnsmasq", "/usr/sbin/dnsmasq", "/sbin/dnsmasq"):
		w = shutil.which(p)
		if w:
			return w
	return None


def _die_with_parent():
	"""In the child: get SIGTERM when the test script dies (e.g. killed
	by run-integration.sh's timeout), so no dnsmasq is left behind."""
	try:
		import ctypes
		libc = ctypes.CDLL(None, use_errno=True)
		libc.prctl(1, 15)	# PR_SET_PDEATHSIG, SIGTERM
	except (OSError, AttributeError):
		pass


def _query(name, qtype):
	qid = random.randint(0, 0xffff)
	q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
	for label in name.rstrip(".").split("."):
		q += bytes([len(label)]) + label.encode()
	q += b"\0" + struct.pack(">HH", qtype, 1)
	return qid, q


class Dns:
	"""dnsmasq on 127.0.0.1:port.

	mx: list of (domain, host, preference); hosts: list of (name, ip);
	rr: list of (name, type number, hex data) for --dns-rr; extra: more
	dnsmasq arguments."""

	def __init__(self, mx=(), hosts=(), rr=(), extra=()):
		exe = dnsmasq_path()
		if exe is None:
			fail("dnsmasq not found: the release tests need it "
			    "(apt-get install dnsmasq-base, or sh contrib/install-deps.sh)")
		self.port = free_port()
		self.dir = tempfile.mkdtemp(prefix="odrelay-dns-")
		self.log = os.path.join(self.dir, "dnsmasq.log")
		args = [exe, "--no-daemon", "--conf-file=/dev/null", "--no-resolv",
		    "--no-hosts", "--no-poll", "--bind-interfaces",
		    "--listen-address=127.0.0.1", "--port=%d" % self.port,
		    "--pid-file=", "--log-queries"]
		if os.geteuid() == 0:
			args.append("--user=root")
		for dom, host, pref in mx:
			args.append("--mx-host=%s,%s,%d" % (dom, host, pref))
		for name, ip in hosts:
			args.append("--host-record=%s,%s" % (name, ip))
		for name, typ, data in rr:
			args.append("--dns-rr=%s,%d,%s" % (name, typ, data))
		args.extend(extra)	# e.g. --server=/zone/127.0.0.1#port
		# Answer NXDOMAIN/NODATA for everything else under the names'
		# top-level domains (not REFUSED, which a resolver treats as a
		# temporary failure), e.g. AAAA of an MX host that has only A.
		tlds = {"invalid"}
		for n in [m[0] for m in mx] + [m[1] for m in mx] + \
		    [h[0] for h in hosts] + [r[0] for r in rr]:
			tlds.add(n.rstrip(".").rsplit(".", 1)[-1])
		for t in sorted(tlds):
			args.append("--local=/%s/" % t)
		self.args = args
		self.logf = open(self.log, "wb")
		self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
		    stdout=self.logf, stderr=self.logf,
		    preexec_fn=_die_with_parent)
		self._wait_ready()

	def _wait_ready(self, bound=5.0):
		deadline = time.time() + bound
		s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
		s.settimeout(0.2)
		try:
			while time.time() < deadline:
				if self.proc.poll() is not None:
					self.logf.close()
					fail("dnsmasq exited with status %d: %s\n%s"
					    % (self.proc.returncode, " ".join(self.args),
					    self.log_text()))
				qid, q = _query("ready.invalid", 1)
				try:
					s.sendto(q, ("127.0.0.1", self.port))
					d, _ = s.recvfrom(4096)
					if len(d) >= 2 and struct.unpack(">H", d[:2])[0] == qid:
						return
				except OSError:
					time.sleep(0.05)
		finally:
			s.close()
		self.stop()
		fail("dnsmasq did not answer on port %d within %.0f s\n%s"
		    % (self.port, bound, self.log_text()))

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

	def cleanup(self):
		self.stop()
		shutil.rmtree(self.dir, ignore_errors=True)

	def __enter__(self):
		return self

	def __exit__(self, et, ev, tb):
		if et is not None:
			print("---- dnsmasq log:\n" + self.log_text()[-3000:])
		self.cleanup()
		return False
