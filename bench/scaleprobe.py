#!/usr/bin/env python3
"""scaleprobe - the clients of bench/scale.sh (standard library only).

  greet PORT TIMEOUT          seconds until a 220 greeting can be read
  start PORT TIMEOUT OUT CMD  runs CMD (odrelayd -f ...), writes "SECONDS
                              PID" to OUT once a 220 can be read (time from
                              the fork, so the interpreter's own start-up
                              is not counted), then waits for CMD, passing
                              SIGTERM on; exits with its status
  noop PORT OUTFILE           one session sending NOOP every 10 ms until
                              SIGTERM; writes "max_ms p99_ms count" to
                              OUTFILE (the longest reply delay is the
                              longest event-loop stall it saw), then the
                              replies slower than 20 ms as TIME:MS
  etrn PORT DOMAIN            ETRN reply latency in ms and the reply
"""

import signal
import socket
import sys
import time


def reply(f):
	lines = []
	while True:
		line = f.readline()
		if not line:
			raise EOFError("connection closed")
		lines.append(line.decode(errors="replace").rstrip())
		if len(line) < 4 or line[3:4] == b" ":
			return lines


def greet(port, timeout):
	t0 = time.time()
	while time.time() - t0 < timeout:
		try:
			s = socket.create_connection(("127.0.0.1", port), 1)
			s.settimeout(timeout)
			f = s.makefile("rb")
			r = reply(f)
			s.close()
			if r[-1].startswith("220"):
				print("%.3f" % (time.time() - t0))
				return 0
		except (OSError, EOFError):
			time.sleep(0.005)
	print("timeout")
	return 1


def start(port, timeout, out, cmd):
	import subprocess
	t0 = time.monotonic()
	p = subprocess.Popen(cmd)
	signal.signal(signal.SIGTERM, lambda *a: p.terminate())
	res = "timeout %d" % p.pid
	while time.monotonic() - t0 < timeout and p.poll() is None:
		try:
			s = socket.create_connection(("127.0.0.1", port), 1)
			s.settimeout(timeout)
			r = s.recv(512)
			s.close()
			if r.startswith(b"220"):
				res = "%.3f %d" % (time.monotonic() - t0, p.pid)
				break
		except OSError:
			time.sleep(0.001)
	with open(out + ".tmp", "w") as fp:
		fp.write(res + "\n")
	import os
	os.rename(out + ".tmp", out)
	while True:
		try:
			return p.wait()
		except InterruptedError:
			continue


def noop(port, out):
	stop = []
	signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
	s = socket.create_connection(("127.0.0.1", port), 5)
	s.settimeout(60)
	s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
	f = s.makefile("rb")
	reply(f)
	s.sendall(b"EHLO probe.test\r\n")
	reply(f)
	delays = []
	slow = []
	nxt = time.monotonic()
	while not stop:
		t = time.monotonic()
		s.sendall(b"NOOP\r\n")
		reply(f)
		delays.append(time.monotonic() - t)
		if delays[-1] > 0.020:
			slow.append("%.3f:%.0f" % (time.time(), delays[-1] * 1000))
		nxt += 0.010
		d = nxt - time.monotonic()
		if d > 0:
			time.sleep(d)
		else:
			nxt = time.monotonic()
	try:
		s.sendall(b"QUIT\r\n")
		s.close()
	except OSError:
		pass
	delays.sort()
	with open(out, "w") as fp:
		fp.write("%.1f %.1f %d\n" % (delays[-1] * 1000,
		    delays[int(len(delays) * 0.99) - 1] * 1000 if delays else 0,
		    len(delays)))
		fp.write(" ".join(slow[:200]) + "\n")
	return 0


def etrn(port, domain):
	s = socket.create_connection(("127.0.0.1", port), 5)
	s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
	f = s.makefile("rb")
	reply(f)
	s.sendall(b"EHLO probe.test\r\n")
	reply(f)
	t = time.monotonic()
	s.sendall(("ETRN %s\r\n" % domain).encode())
	r = reply(f)
	ms = (time.monotonic() - t) * 1000
	s.sendall(b"QUIT\r\n")
	s.close()
	print("%.2f %s" % (ms, r[-1].replace(" ", "_")))
	return 0


def main():
	a = sys.argv[1:]
	if a and a[0] == "greet":
		return greet(int(a[1]), float(a[2]))
	if a and a[0] == "start":
		return start(int(a[1]), float(a[2]), a[3], a[4:])
	if a and a[0] == "noop":
		return noop(int(a[1]), a[2])
	if a and a[0] == "etrn":
		return etrn(int(a[1]), a[2])
	print(__doc__)
	return 2


if __name__ == "__main__":
	sys.exit(main())
