#!/usr/bin/env python3
"""Fault injection: peers that vanish after every protocol step (inbound
SMTP, ETRN delivery, the reversed ATRN session), a full LMDB map, a queue
directory made read-only, DNS that times out or answers SERVFAIL.

The rule checked throughout: nothing acknowledged is lost, nothing is
delivered twice except after a drop between the final dot and its reply
(the one duplicate SMTP allows, RFC 5321 6.1 / RFC 1047)."""

import os
import re
import socket
import stat
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Failure, Fixture, check, dot_stuff, fail, free_port,
    json_find, json_messages, queued_id, run_tests)
from pullsink import add_user, cram_response, msg_rcpts

# Where a scripted peer vanishes.  "connect": before any greeting;
# "greeting": right after its 220; then on receiving that command
# (without answering it; "rcpt2": the second RCPT, after accepting the
# first); "body": part way through the message text;
# "dot": after the final dot, before the end-of-data reply.
SERVER_STEPS = ("connect", "greeting", "ehlo", "mail", "rcpt", "rcpt2",
    "data", "body", "dot")
RCPTS = ["u@example.org", "v@example.org"]


def message(tag, lines=40):
	"""A message whose text names tag; long enough to drop inside."""
	body = b"".join(b"line %03d of %s, padding padding padding\r\n"
	    % (i, tag.encode()) for i in range(lines))
	return (b"From: s@client.test\r\nTo: u@example.org\r\n"
	    b"Subject: fault " + tag.encode() + b"\r\n\r\n" + body +
	    b".leading dot\r\nEND-" + tag.encode() + b"\r\n")


def submit(port, rcpts, data, sender="s@client.test"):
	c = Conn(port)
	try:
		c.greet_ehlo("client.test")
		c.expect(250, "MAIL FROM:<%s>" % sender)
		for r in [rcpts] if isinstance(rcpts, str) else rcpts:
			c.expect(250, "RCPT TO:<%s>" % r)
		c.expect(354, "DATA")
		c.send(dot_stuff(data) + b".\r\n")
		code, text = c.reply()
		check(code == 250, "message not accepted: %s %r" % (code, text))
		c.cmd("QUIT")
		return queued_id(text)
	finally:
		c.close()


def msgs(d):
	return json_messages(d.queue_json())


def abort(sock, rst=False):
	try:
		if rst:
			sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
			    struct.pack("ii", 1, 0))
		else:
			sock.shutdown(socket.SHUT_RDWR)
	except OSError:
		pass
	sock.close()


# --- a scripted SMTP server that drops at a chosen step --------------------

class Record:
	def __init__(self):
		self.lock = threading.Lock()
		self.complete = []	# message texts received up to the dot
		self.accepted = []	# ... and answered 250
		self.connections = 0
		self.active = 0
		self.log = []

	def add(self, what, data):
		with self.lock:
			getattr(self, what).append(data)

	def count(self, tag, what="accepted"):
		with self.lock:
			return sum(1 for m in getattr(self, what)
			    if b"END-" + tag.encode() + b"\r\n" in m)


def play_server(sock, buf, drop, rec, name="peer.test"):
	"""Serve SMTP on sock until QUIT/EOF, or vanish at step drop."""
	sock.settimeout(20)

	def readline():
		nonlocal buf
		while b"\r\n" not in buf:
			try:
				d = sock.recv(65536)
			except OSError:
				return None
			if not d:
				return None
			buf += d
		line, buf = buf.split(b"\r\n", 1)
		rec.log.append(b"C: " + line[:100])
		return line

	def out(line):
		rec.log.append(b"S: " + line.encode())
		sock.sendall(line.encode() + b"\r\n")

	try:
		if drop == "connect":
			return
		out("220 %s ESMTP scripted" % name)
		if drop == "greeting":
			return
		nrcpt = 0
		while True:
			line = readline()
			if line is None:
				return
			verb = line.split(b" ", 1)[0].upper().decode(errors="replace")
			if verb == "RCPT":
				nrcpt += 1
				if nrcpt == 2:
					verb = "RCPT2"
			if verb.lower() == drop:
				return
			if verb == "RCPT2":
				verb = "RCPT"
			if verb == "EHLO":
				out("250-%s" % name)
				out("250-8BITMIME")
				out("250 SIZE 100000000")
			elif verb == "HELO":
				out("250 " + name)
			elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
				if verb in ("MAIL", "RSET"):
					nrcpt = 0
				out("250 2.0.0 ok")
			elif verb == "DATA":
				out("354 go ahead")
				lines = []
				while True:
					l = readline()
					if l is None:
						return
					if drop == "body" and len(lines) >= 5:
						return
					if l == b".":
						break
					lines.append(l[1:] if l.startswith(b".") else l)
				data = b"".join(x + b"\r\n" for x in lines)
				rec.add("complete", data)
				if drop == "dot":
					return
				out("250 2.0.0 accepted")
				rec.add("accepted", data)
			elif verb == "QUIT":
				out("221 2.0.0 bye")
				return
			else:
				out("502 5.5.1 no")
	except OSError:
		return
	finally:
		abort(sock)


class DropSink:
	"""Listening scripted server; self.drop applies to each new connection."""

	def __init__(self):
		self.port = free_port()
		self.drop = None
		self.rec = Record()
		self.ls = socket.socket()
		self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		self.ls.bind(("127.0.0.1", self.port))
		self.ls.listen(16)
		self.ls.settimeout(0.2)
		self.stopping = False
		self.t = threading.Thread(target=self.loop, daemon=True)
		self.t.start()

	def loop(self):
		while not self.stopping:
			try:
				c, _ = self.ls.accept()
			except socket.timeout:
				continue
			except OSError:
				return
			with self.rec.lock:
				self.rec.connections += 1
				self.rec.active += 1
			threading.Thread(target=self.conn, args=(c, self.drop),
			    daemon=True).start()

	def conn(self, c, drop):
		try:
			play_server(c, b"", drop, self.rec)
		finally:
			with self.rec.lock:
				self.rec.active -= 1

	def stop(self):
		self.stopping = True
		self.ls.close()
		self.t.join(2)


def wait_for(cond, what, timeout=15.0, d=None):
	deadline = time.time() + timeout
	while time.time() < deadline:
		if cond():
			return
		time.sleep(0.1)
	if cond():
		return
	fail("timed out after %.0f s waiting for %s%s" % (timeout, what,
	    "" if d is None else "\nqueue: %r" % msgs(d)))


def settled(d, qid):
	"""True when qid is gone or not being delivered."""
	m = json_find(d.queue_json(), qid)
	return m is None or m.get("state") != "delivering"


def etrn(d, domain="example.org"):
	c = Conn(d.smtp_port)
	try:
		c.greet_ehlo("customer.test")
		code, text = c.cmd("ETRN " + domain)
		c.cmd("QUIT")
		return code, text
	finally:
		c.close()


# --- inbound --------------------------------------------------------------

INBOUND_STEPS = ("connect", "greeting", "ehlo", "mail", "rcpt", "data",
    "body", "dot")


def inbound_drop(d, step, rst, tag):
	"""Play a client that vanishes at step; returns the message text."""
	data = message(tag)
	c = Conn(d.smtp_port)
	try:
		if step == "connect":
			return data
		c.expect(220, what="greeting")
		if step == "greeting":
			return data
		script = [("ehlo", "EHLO client.test", 250),
		    ("mail", "MAIL FROM:<s@client.test>", 250),
		    ("rcpt", "RCPT TO:<u@example.org>", 250),
		    ("data", "DATA", 354)]
		for name, line, code in script:
			if name == step:
				# Send the command and vanish without its reply.
				c.send(line + "\r\n")
				return data
			c.expect(code, line)
		stuffed = dot_stuff(data)
		if step == "body":
			c.send(stuffed[:len(stuffed) // 2])
			return data
		c.send(stuffed + b".\r\n")	# step == "dot"
		return data
	finally:
		abort(c.s, rst)


def test_inbound_drop_every_step():
	with Fixture("faults-in") as d:
		for rst in (False, True):
			for step in INBOUND_STEPS:
				tag = "in-%s-%s" % (step, "rst" if rst else "fin")
				before = {m["id"] for m in msgs(d)}
				data = inbound_drop(d, step, rst, tag)
				# Let the daemon see the EOF (and commit, for "dot").
				time.sleep(0.3 if step != "dot" else 1.0)
				new = [m for m in msgs(d) if m["id"] not in before]
				if step != "dot":
					check(not new, "%s: drop at %s queued %r" % (tag, step,
					    new))
					continue
				check(len(new) <= 1, "%s: %d messages queued" % (tag,
				    len(new)))
				print("  %s: %d message(s) kept" % (tag, len(new)))
				for m in new:
					body = d.body(m["id"])
					check(body.endswith(data), "%s: stored message is not "
					    "complete (%d octets, want ...%r)" % (tag, len(body),
					    data[-40:]))
					check(msg_rcpts(m) == ["u@example.org"],
					    "%s: recipients %r" % (tag, msg_rcpts(m)))
		check(d.running(), "odrelayd died")
		# Still serving normally.
		submit(d.smtp_port, "u@example.org", message("in-after"))


# --- ETRN delivery ----------------------------------------------------------

def test_etrn_delivery_drop_every_step():
	sink = DropSink()
	domains = ("[domain example.org]\nhold = yes\nroute = 127.0.0.1:%d\n"
	    % sink.port)
	try:
		with Fixture("faults-etrn", domains=domains,
		    extra="etrn_rate = 1000\n") as d:
			for step in SERVER_STEPS:
				tag = "etrn-" + step
				qid = submit(d.smtp_port, RCPTS, message(tag))
				sink.drop = step
				n0 = sink.rec.connections
				code, text = etrn(d)
				check(code in (250, 253), "%s: ETRN: %s %r" % (tag, code,
				    text))
				wait_for(lambda: sink.rec.connections > n0 and
				    sink.rec.active == 0 and settled(d, qid),
				    "%s: the failed delivery to end" % tag, d=d)
				time.sleep(0.3)
				m = json_find(d.queue_json(), qid)
				check(m is not None, "%s: message %s lost after a drop at "
				    "%s (sink: %d accepted)" % (tag, qid, step,
				    sink.rec.count(tag)))
				check(msg_rcpts(m) == RCPTS,
				    "%s: recipients %r" % (tag, msg_rcpts(m)))
				check(sink.rec.count(tag) == 0, "%s: accepted while "
				    "dropping" % tag)
				got = sink.rec.count(tag, "complete")
				check(step == "dot" or got == 0, "%s: %d complete copies"
				    % (tag, got))
				if step == "dot":
					print("  %s: %d complete unanswered cop%s at the "
					    "peer" % (tag, got, "y" if got == 1 else "ies"))
				# A good peer now gets it exactly once.
				sink.drop = None
				code, text = etrn(d)
				check(code in (250, 253), "%s: second ETRN: %s %r" % (tag,
				    code, text))
				wait_for(lambda: json_find(d.queue_json(), qid) is None,
				    "%s: delivery after the good ETRN" % tag, d=d)
				time.sleep(0.3)
				check(sink.rec.count(tag) == 1, "%s: delivered %d times"
				    % (tag, sink.rec.count(tag)))
			check(d.running(), "odrelayd died")
	finally:
		sink.stop()


# --- ATRN reversed session ----------------------------------------------------

def atrn_login(d):
	c = Conn(d.odmr_port)
	c.greet_ehlo("customer.test")
	chal = c.expect(334, "AUTH CRAM-MD5")[4:]
	c.expect(235, cram_response("demo", "demo-pw", chal))
	return c


def test_atrn_drop_every_step():
	with Fixture("faults-atrn", extra="atrn_rate = 1000\n",
	    domains="[domain example.org]\nhold = yes\n", start=False) as d:
		add_user(d, "demo", "demo-pw", "example.org")
		d.start()
		for step in SERVER_STEPS:
			tag = "atrn-" + step
			qid = submit(d.smtp_port, RCPTS, message(tag))
			rec = Record()
			c = atrn_login(d)
			code, text = c.cmd("ATRN example.org")
			check(code == 250, "%s: ATRN %s %r" % (tag, code, text))
			play_server(c.s, c.buf, step, rec, "customer.test")
			wait_for(lambda: settled(d, qid), "%s: the session to end" % tag,
			    d=d)
			time.sleep(0.3)
			m = json_find(d.queue_json(), qid)
			check(m is not None, "%s: message lost after a drop at %s"
			    % (tag, step))
			check(msg_rcpts(m) == RCPTS, "%s: recipients %r"
			    % (tag, msg_rcpts(m)))
			check(rec.count(tag, "complete") == (1 if step == "dot" else 0),
			    "%s: %d complete copies" % (tag, rec.count(tag, "complete")))
			# A good pull gets it exactly once.
			good = Record()
			c = atrn_login(d)
			code, text = c.cmd("ATRN example.org")
			check(code == 250, "%s: good ATRN %s %r" % (tag, code, text))
			play_server(c.s, c.buf, None, good, "customer.test")
			check(good.count(tag) == 1, "%s: good pull delivered %d copies "
			    "(%d messages in all)" % (tag, good.count(tag),
			    len(good.accepted)))
			wait_for(lambda: json_find(d.queue_json(), qid) is None,
			    "%s: message gone after the good pull" % tag, d=d)
		check(d.running(), "odrelayd died")


# --- LMDB map full ----------------------------------------------------------

def test_map_full():
	sink = DropSink()
	domains = ("[domain example.org]\nhold = yes\nroute = 127.0.0.1:%d\n"
	    % sink.port)
	try:
		with Fixture("faults-full", domains=domains,
		    extra="queue_map_size = 1M\nmax_message_size = 10M\n") as d:
			ok = {}
			full = None
			c = Conn(d.smtp_port)
			c.greet_ehlo("client.test")
			for i in range(60):
				tag = "full-%02d" % i
				data = message(tag, lines=1200)	# ~60 KB
				c.expect(250, "MAIL FROM:<s@client.test>")
				code, text = c.cmd("RCPT TO:<u@example.org>")
				if code == 250:
					c.expect(354, "DATA")
					c.send(dot_stuff(data) + b".\r\n")
					code, text = c.reply()
				if code == 250:
					ok[queued_id(text)] = data
					continue
				full = (code, text)
				break
			check(full is not None, "60 messages of 60 KB fit a 1M map?")
			check(full[0] == 452 and "4.3.1" in full[1],
			    "map full: expected 452 4.3.1, got %r" % (full,))
			check(ok, "not a single message fitted")
			print("  map full after %d messages: %r" % (len(ok), full))
			c.expect(250, "RSET")
			c.expect(250, "NOOP")
			c.cmd("QUIT")
			c.close()
			check(d.running(), "odrelayd died when the map filled")
			code, text = etrn(d, "nosuch.example")
			check(code is not None, "no answer after the map filled")
			for qid, data in ok.items():
				check(d.body(qid).endswith(data), "%s damaged" % qid)
			# Delivery (which must write to the full map) still works
			# and frees the space.
			code, text = etrn(d)
			check(code in (250, 253), "ETRN with a full map: %s %r"
			    % (code, text))
			wait_for(lambda: not msgs(d), "the queue to empty", 30, d)
			check(len(sink.rec.accepted) == len(ok),
			    "delivered %d of %d" % (len(sink.rec.accepted), len(ok)))
			for data in ok.values():
				check(sum(1 for m in sink.rec.accepted if m.endswith(data))
				    == 1, "a message arrived altered or twice")
			submit(d.smtp_port, "u@example.org", message("full-after",
			    lines=1200))
	finally:
		sink.stop()


# --- read-only queue directory -----------------------------------------------

def send_code(d, data):
	"""Try one message; the final reply (code, text), whatever it is."""
	c = Conn(d.smtp_port)
	try:
		c.greet_ehlo("client.test")
		c.expect(250, "MAIL FROM:<s@client.test>")
		code, text = c.cmd("RCPT TO:<u@example.org>")
		if code == 250:
			c.expect(354, "DATA")
			c.send(dot_stuff(data) + b".\r\n")
			code, text = c.reply()
		c.cmd("QUIT")
		return code, text
	finally:
		c.close()


def test_queue_dir_read_only():
	with Fixture("faults-ro") as d:
		q0 = submit(d.smtp_port, "u@example.org", message("ro-before"))
		files = [os.path.join(d.queue_dir, f) for f in os.listdir(d.queue_dir)]
		modes = {p: stat.S_IMODE(os.stat(p).st_mode)
		    for p in [d.queue_dir] + files}
		try:
			os.chmod(d.queue_dir, 0o555)
			for f in files:
				os.chmod(f, 0o444)
			results = []
			for i in range(3):
				data = message("ro-%d" % i)
				code, text = send_code(d, data)
				check(code in (250, 451, 452), "read-only queue: %s %r"
				    % (code, text))
				results.append((code, queued_id(text), data))
			check(d.running(), "odrelayd died with a read-only queue dir")
			print("  replies with a read-only queue: %s"
			    % [r[0] for r in results])
			# Whatever was acknowledged is really there (the open LMDB
			# file stays writable through its descriptor).
			for code, qid, data in results:
				if code == 250:
					check(d.body(qid).endswith(data), "acknowledged %s "
					    "not in the queue" % qid)
			# A restart on the read-only queue: refused cleanly (exit
			# 1 or 2, no signal), or up and still answering sanely.
			check(d.stop() == 0, "odrelayd did not exit 0 on SIGTERM "
			    "with a read-only queue")
			try:
				d.start()
				up = True
			except Failure as e:
				up = False
				rc = d.proc.returncode
				check(rc in (1, 2), "restart on a read-only queue: %s" % e)
			print("  restart on the read-only queue: %s" % ("running" if up
			    else "refused, exit %d" % d.proc.returncode))
			if up:
				code, text = send_code(d, message("ro-restart"))
				check(code in (250, 451, 452), "after the restart: %s %r"
				    % (code, text))
				check(d.stop() == 0, "odrelayd did not exit 0")
		finally:
			for p, m in modes.items():
				os.chmod(p, m)
		d.start()
		check(d.body(q0).endswith(message("ro-before")), "earlier mail lost")
		for code, qid, data in results:
			if code == 250:
				check(d.body(qid).endswith(data), "%s lost" % qid)
		submit(d.smtp_port, "u@example.org", message("ro-after"))


# --- DNS failures ----------------------------------------------------------------

class DnsStub:
	"""UDP DNS 'server': silent (never answers) or SERVFAIL for everything."""

	def __init__(self, servfail):
		self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
		self.s.bind(("127.0.0.1", 0))
		self.port = self.s.getsockname()[1]
		self.queries = 0
		self.servfail = servfail
		self.s.settimeout(0.2)
		self.stopping = False
		self.t = threading.Thread(target=self.loop, daemon=True)
		self.t.start()

	def loop(self):
		while not self.stopping:
			try:
				q, peer = self.s.recvfrom(4096)
			except socket.timeout:
				continue
			except OSError:
				return
			self.queries += 1
			if not self.servfail or len(q) < 12:
				continue
			qid, flags = struct.unpack(">HH", q[:4])
			# QR, opcode and RD copied, RA, RCODE 2 (SERVFAIL); question kept.
			flags = 0x8000 | (flags & 0x7900) | 0x0080 | 2
			self.s.sendto(struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 0)
			    + q[12:], peer)

	def stop(self):
		self.stopping = True
		self.t.join(2)
		self.s.close()


DNS_DOMAINS = """
[domain example.org]
hold = yes

[domain backup.example]
hold = no
"""


def dns_case(servfail, bound):
	dns = DnsStub(servfail)
	try:
		with Fixture("faults-dns", domains=DNS_DOMAINS,
		    extra="retry_min = 10m\n", start=False) as d:
			# The harness points dns_servers at an unused port.
			d.text = re.sub(r"(?m)^dns_servers = .*$",
			    "dns_servers = 127.0.0.1:%d" % dns.port, d.text)
			with open(d.conf, "w") as f:
				f.write(d.text)
			d.start()
			q1 = submit(d.smtp_port, "x@backup.example", message("dns-b"))
			q2 = submit(d.smtp_port, "u@example.org", message("dns-h"))
			code, text = etrn(d)
			check(code in (250, 253), "ETRN: %s %r" % (code, text))

			def deferred():
				m = json_find(d.queue_json(), q1)
				check(m is not None, "backup mail lost after a DNS failure")
				r = m["recipients"][0]
				return (m.get("state") == "deferred" and r.get("attempts", 0)
				    >= 1 and settled(d, q2))
			wait_for(deferred, "the backup MX mail to be deferred", bound, d)
			check(dns.queries > 0, "no DNS query reached the stub")
			for qid, rc, tag in ((q1, "x@backup.example", "dns-b"),
			    (q2, "u@example.org", "dns-h")):
				m = json_find(d.queue_json(), qid)
				check(m is not None and msg_rcpts(m) == [rc],
				    "%s not kept: %r" % (tag, m))
				check(d.body(qid).endswith(message(tag)), "%s damaged" % tag)
			check(d.running(), "odrelayd died")
	finally:
		dns.stop()


def test_dns_timeout():
	dns_case(False, 40)


def test_dns_servfail():
	dns_case(True, 15)


if __name__ == "__main__":
	run_tests([
		test_inbound_drop_every_step,
		test_etrn_delivery_drop_every_step,
		test_atrn_drop_every_step,
		test_map_full,
		test_queue_dir_read_only,
		test_dns_servfail,
		test_dns_timeout,
	], "faults")
