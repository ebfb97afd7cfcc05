"""dnssec - signed zones for odrelay's DANE tests: nsd serves zones signed
here with ldns-keygen/ldns-signzone, and unbound validates them with the
test's own trust anchors on a loopback port (stub zones to nsd).  Both
run in the foreground and are stopped by PID.  Nothing is read from the
system's resolver configuration; nothing leaves loopback.
"""

import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import time

from odtest import Skip, fail, free_port


def _die_with_parent():
	try:
		import ctypes
		libc = ctypes.CDLL(None, use_errno=True)
		libc.prctl(1, 15)	# PR_SET_PDEATHSIG, SIGTERM
	except (OSError, AttributeError):
		pass


def _tool(name):
	for p in (name, "/usr/sbin/" + name, "/usr/bin/" + name):
		w = shutil.which(p)
		if w:
			return w
	raise Skip("%s not found (sh contrib/install-deps.sh)" % name)


def query(port, name, qtype, ad=True, bound=2.0):
	"""One UDP query to 127.0.0.1:port: (rcode, ad_bit, ancount) or None."""
	qid = random.randint(0, 0xffff)
	q = struct.pack(">HHHHHH", qid, 0x0100 | (0x20 if ad else 0), 1, 0, 0, 0)
	for label in name.rstrip(".").split("."):
		q += bytes([len(label)]) + label.encode()
	q += b"\0" + struct.pack(">HH", qtype, 1)
	s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
	s.settimeout(bound)
	try:
		s.sendto(q, ("127.0.0.1", port))
		d, _ = s.recvfrom(65535)
	except OSError:
		return None
	finally:
		s.close()
	if len(d) < 12 or struct.unpack(">H", d[:2])[0] != qid:
		return None
	flags = struct.unpack(">H", d[2:4])[0]
	return flags & 0xf, bool(flags & 0x20), struct.unpack(">H", d[6:8])[0]


class Zone:
	"""name: the zone; records: zone file lines relative to it; signed:
	sign it and trust its key; bogus: sign it, then change the data of
	its TLSA records so their signatures no longer match."""

	def __init__(self, name, records, signed=True, bogus=False):
		self.name = name.rstrip(".")
		self.records = records
		self.signed = signed or bogus
		self.bogus = bogus


class DnssecDns:
	def __init__(self, zones):
		self.nsd_exe = _tool("nsd")
		self.unbound_exe = _tool("unbound")
		self.keygen = _tool("ldns-keygen")
		self.signzone = _tool("ldns-signzone")
		self.dir = tempfile.mkdtemp(prefix="odrelay-dnssec-")
		os.chmod(self.dir, 0o755)
		self.nsd_port = free_port()
		self.port = free_port()		# unbound: the relay's resolver
		self.procs = []
		self.logs = []
		anchors = []
		for z in zones:
			path = self._zonefile(z)
			if z.signed:
				ksk, zsk = self._keys(z)
				self._run([self.signzone, "-f", path + ".signed", path,
				    zsk, ksk])
				path += ".signed"
				if z.bogus:
					self._spoil(path)
				with open(os.path.join(self.dir, ksk + ".key")) as f:
					anchors.append(f.read().strip())
			z.path = path
		self.anchor_file = os.path.join(self.dir, "anchors.key")
		with open(self.anchor_file, "w") as f:
			f.write("\n".join(anchors) + "\n")
		self._start_nsd(zones)
		self._start_unbound(zones)

	def _run(self, argv):
		r = subprocess.run(argv, cwd=self.dir, stdout=subprocess.PIPE,
		    stderr=subprocess.STDOUT, timeout=60)
		if r.returncode != 0:
			self.cleanup()
			fail("%s failed: %s" % (" ".join(argv),
			    r.stdout.decode(errors="replace")))
		return r.stdout.decode().strip()

	def _zonefile(self, z):
		path = os.path.join(self.dir, z.name + ".zone")
		lines = ["$ORIGIN %s." % z.name, "$TTL 300",
		    "@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300"
		    % (z.name, z.name),
		    "@ IN NS ns.%s." % z.name, "ns IN A 127.0.0.1"]
		lines += z.records
		with open(path, "w") as f:
			f.write("\n".join(lines) + "\n")
		return path

	def _keys(self, z):
		ksk = self._run([self.keygen, "-a", "ECDSAP256SHA256", "-k", z.name])
		zsk = self._run([self.keygen, "-a", "ECDSAP256SHA256", z.name])
		return ksk.split()[-1], zsk.split()[-1]

	def _spoil(self, path):
		out = []
		n = 0
		with open(path) as f:
			for line in f:
				parts = line.split()
				if len(parts) >= 8 and parts[3] == "TLSA":
					data = parts[-1]
					# A different first digit: the RRSIG no longer fits.
					parts[-1] = ("1" if data[0] == "0" else "0") + data[1:]
					line = "\t".join(parts) + "\n"
					n += 1
				out.append(line)
		if n == 0:
			fail("no TLSA record to spoil in " + path)
		with open(path, "w") as f:
			f.writelines(out)

	def _spawn(self, argv, log):
		logf = open(log, "wb")
		p = subprocess.Popen(argv, cwd=self.dir, stdin=subprocess.DEVNULL,
		    stdout=logf, stderr=logf, preexec_fn=_die_with_parent)
		self.procs.append(p)
		self.logs.append(log)
		logf.close()
		return p

	def _wait(self, proc, port, name, what):
		deadline = time.time() + 10
		while time.time() < deadline:
			if proc.poll() is not None:
				break
			if query(port, name, 6, bound=0.3) is not None:
				return
			time.sleep(0.05)
		text = self.log_text()
		self.cleanup()
		fail("%s did not answer on port %d:\n%s" % (what, port, text[-3000:]))

	def _start_nsd(self, zones):
		conf = os.path.join(self.dir, "nsd.conf")
		lines = ["server:", "  ip-address: 127.0.0.1@%d" % self.nsd_port,
		    "  port: %d" % self.nsd_port, "  do-ip6: no",
		    '  username: ""', '  chroot: ""',
		    "  zonesdir: %s" % self.dir, '  database: ""',
		    "  pidfile: %s/nsd.pid" % self.dir,
		    "  xfrdfile: %s/xfrd.state" % self.dir,
		    "  zonelistfile: %s/zone.list" % self.dir,
		    "  xfrdir: %s" % self.dir,
		    "  server-count: 1", "  verbosity: 1",
		    "remote-control:", "  control-enable: no"]
		for z in zones:
			lines += ["zone:", "  name: %s" % z.name,
			    "  zonefile: %s" % z.path]
		with open(conf, "w") as f:
			f.write("\n".join(lines) + "\n")
		p = self._spawn([self.nsd_exe, "-d", "-c", conf],
		    os.path.join(self.dir, "nsd.log"))
		self._wait(p, self.nsd_port, zones[0].name, "nsd")

	def _start_unbound(self, zones):
		conf = os.path.join(self.dir, "unbound.conf")
		lines = ["server:", "  interface: 127.0.0.1",
		    "  port: %d" % self.port, "  do-ip6: no",
		    '  username: ""', '  chroot: ""', "  directory: %s" % self.dir,
		    '  pidfile: ""', "  use-syslog: no",
		    "  logfile: %s/unbound.log" % self.dir,
		    "  verbosity: 1", "  do-daemonize: no",
		    "  do-not-query-localhost: no", "  num-threads: 1",
		    "  trust-anchor-file: %s" % self.anchor_file,
		    "  module-config: \"validator iterator\"",
		    "  val-log-level: 2", "  cache-max-negative-ttl: 1",
		    # RFC 6761 names are served empty by default.
		    '  local-zone: "test." nodefault',
		    "remote-control:", "  control-enable: no"]
		for z in zones:
			lines += ["stub-zone:", '  name: "%s"' % z.name,
			    "  stub-addr: 127.0.0.1@%d" % self.nsd_port]
		with open(conf, "w") as f:
			f.write("\n".join(lines) + "\n")
		p = self._spawn([self.unbound_exe, "-d", "-c", conf],
		    os.path.join(self.dir, "unbound.out"))
		self._wait(p, self.port, zones[0].name, "unbound")

	def log_text(self):
		out = ""
		for log in self.logs + [os.path.join(self.dir, "unbound.log")]:
			try:
				with open(log, "rb") as f:
					out += "== %s\n%s" % (os.path.basename(log),
					    f.read().decode(errors="replace"))
			except OSError:
				pass
		return out

	def cleanup(self):
		for p in self.procs:
			if p.poll() is None:
				p.terminate()
				try:
					p.wait(5)
				except subprocess.TimeoutExpired:
					p.kill()
					p.wait(5)
		self.procs = []
		shutil.rmtree(self.dir, ignore_errors=True)

	def __enter__(self):
		return self

	def __exit__(self, et, ev, tb):
		if et is not None and et is not Skip:
			print("---- DNS logs:\n" + self.log_text()[-4000:])
		self.cleanup()
		return False
