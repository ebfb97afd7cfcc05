"""pullsink - helpers for the ODMR / odpull integration tests.

A recording SMTP/LMTP server (the "local MTA" behind fetchmail or odpull,
or the customer side of a reversed ODMR session played by the test
itself), a CRAM-MD5 customer, and queue polling.  Python 3 stdlib only.
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Failure, Fixture, check, dot_stuff, fail, free_port,
    json_messages, queued_id)


# --- recording SMTP / LMTP server -----------------------------------------

class Txn:
	"""One transaction as the sink saw it."""

	def __init__(self, mail):
		self.mail = mail		# MAIL FROM line argument
		self.rcpts = []			# every RCPT address offered
		self.accepted = []		# addresses answered 2xx
		self.data = None		# message text, dot-unstuffed (bytes)
		self.reply = None		# end-of-data reply(s) sent
		self.complete = False

	def __repr__(self):
		return "Txn(mail=%r, rcpts=%r, accepted=%r, size=%s, reply=%r)" % (
		    self.mail, self.rcpts, self.accepted,
		    None if self.data is None else len(self.data), self.reply)


def addr_of(arg):
	"""The address inside 'TO:<a@b> PARAMS' / 'FROM:<a@b>'."""
	a = arg.split(":", 1)[1].strip() if ":" in arg else arg
	if a.startswith("<"):
		a = a[1:a.index(">")] if ">" in a else a[1:]
	else:
		a = a.split(" ")[0]
	return a


class SinkSession:
	"""Plays an SMTP (or LMTP) server on one connected socket.

	Behaviour knobs (attributes of the owning Sink or passed in):
	  greeting      first line(s) sent, e.g. "220 sink.test ESMTP"
	  rcpt_reply    f(addr) -> reply line (default 250)
	  data_reply    f(txn) -> reply line (SMTP end-of-data)
	  lmtp_reply    f(addr) -> reply line per accepted rcpt (LMTP)
	  drop_in_data  close the connection after the first data bytes
	"""

	def __init__(self, sock, sink, buf=b""):
		self.s = sock
		self.k = sink
		self.buf = buf
		self.txn = None

	def readline(self):
		while b"\r\n" not in self.buf:
			try:
				d = self.s.recv(65536)
			except (socket.timeout, OSError):
				return None
			if not d:
				return None
			self.buf += d
		line, self.buf = self.buf.split(b"\r\n", 1)
		return line

	def send(self, text):
		self.k.log("S: " + text)
		try:
			self.s.sendall(text.encode() + b"\r\n")
		except OSError:
			pass

	def serve(self):
		k = self.k
		self.send(k.greeting)
		if not k.greeting.startswith("2"):
			# A refusing customer: wait for QUIT (or EOF), answer it.
			while True:
				line = self.readline()
				if line is None:
					return
				k.log("C: " + line.decode(errors="replace"))
				k.commands.append(line.decode(errors="replace"))
				if line.upper().startswith(b"QUIT"):
					self.send("221 2.0.0 bye")
					return
				self.send("503 5.5.1 refused already")
		while True:
			line = self.readline()
			if line is None:
				k.log("EOF")
				return
			text = line.decode("utf-8", errors="replace")
			k.log("C: " + text)
			k.commands.append(text)
			verb = text.split(" ", 1)[0].upper()
			arg = text.split(" ", 1)[1] if " " in text else ""
			if verb in ("EHLO", "LHLO", "HELO"):
				if k.lmtp != (verb == "LHLO"):
					self.send("500 5.5.1 wrong greeting command for this server")
					continue
				self.send("250-sink.test hello")
				for ext in k.extensions[:-1]:
					self.send("250-" + ext)
				self.send("250 " + k.extensions[-1])
			elif verb == "MAIL":
				self.txn = Txn(arg)
				k.txns.append(self.txn)
				self.send(k.mail_reply)
			elif verb == "RCPT":
				if self.txn is None:
					self.send("503 5.5.1 MAIL first")
					continue
				a = addr_of(arg)
				self.txn.rcpts.append(a)
				r = k.rcpt_reply(a)
				if r.startswith("2"):
					self.txn.accepted.append(a)
				self.send(r)
			elif verb == "DATA":
				if self.txn is None or not self.txn.accepted:
					self.send("554 5.5.1 no valid recipients")
					continue
				self.send("354 go ahead")
				if not self.read_data():
					return
			elif verb == "RSET":
				self.txn = None
				self.send("250 2.0.0 ok")
			elif verb == "NOOP":
				self.send("250 2.0.0 ok")
			elif verb == "QUIT":
				self.send("221 2.0.0 bye")
				return
			else:
				self.send("502 5.5.1 not implemented")

	def read_data(self):
		k = self.k
		lines = []
		if k.drop_in_data:
			# Wait for some message text, then vanish.
			while len(self.buf) < 10:
				try:
					d = self.s.recv(65536)
				except OSError:
					d = b""
				if not d:
					break
				self.buf += d
			k.log("dropping the connection inside DATA")
			try:
				self.s.shutdown(socket.SHUT_RDWR)
			except OSError:
				pass
			self.s.close()
			return False
		while True:
			line = self.readline()
			if line is None:
				k.log("EOF inside DATA")
				return False
			if line == b".":
				break
			if line.startswith(b"."):
				line = line[1:]
			lines.append(line)
		t = self.txn
		t.data = b"".join(x + b"\r\n" for x in lines)
		t.complete = True
		k.log("message of %d octets for %s" % (len(t.data), t.accepted))
		if k.lmtp:
			t.reply = []
			for a in t.accepted:
				r = k.lmtp_reply(a)
				t.reply.append(r)
				self.send(r)
		else:
			t.reply = k.data_reply(t)
			self.send(t.reply)
		self.txn = None
		return True


def _ok_rcpt(addr):
	return "250 2.1.5 ok"


def _ok_lmtp(addr):
	return "250 2.0.0 <%s> delivered" % addr


class Sink:
	"""Recording SMTP/LMTP server on 127.0.0.1 (thread per connection),
	or just the behaviour holder for SinkSession on a given socket."""

	def __init__(self, lmtp=False, greeting="220 sink.test ESMTP pullsink",
	    rcpt_reply=None, data_reply=None, lmtp_reply=None,
	    mail_reply="250 2.1.0 ok", drop_in_data=False, port=None):
		self.lmtp = lmtp
		self.greeting = greeting
		self.rcpt_reply = rcpt_reply or _ok_rcpt
		self.lmtp_reply = lmtp_reply or _ok_lmtp
		self.mail_reply = mail_reply
		self.data_reply = data_reply or (
		    lambda t: "250 2.0.0 Ok: queued as SINK%d" % len(self.txns))
		self.drop_in_data = drop_in_data
		self.extensions = ["PIPELINING", "8BITMIME", "SIZE 104857600",
		    "ENHANCEDSTATUSCODES"]
		self.txns = []
		self.commands = []
		self.transcript = []
		self.port = port
		self.lsock = None
		self.threads = []
		self.connections = 0
		self.lock = threading.Lock()

	def log(self, text):
		with self.lock:
			self.transcript.append(text[:300])

	def dump(self):
		with self.lock:
			return "\n".join(self.transcript[-60:])

	def delivered(self):
		"""Completed transactions answered 2xx (SMTP) / per-rcpt 2xx."""
		out = []
		for t in self.txns:
			if not t.complete:
				continue
			if self.lmtp:
				ok = [a for a, r in zip(t.accepted, t.reply) if r.startswith("2")]
			else:
				ok = t.accepted if t.reply.startswith("2") else []
			if ok:
				out.append((t, ok))
		return out

	def delivered_rcpts(self):
		return sorted(a for _, ok in self.delivered() for a in ok)

	# -- as a listening server --
	def start(self):
		if self.port is None:
			self.port = free_port()
		self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
		self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		self.lsock.bind(("127.0.0.1", self.port))
		self.lsock.listen(8)
		self.lsock.settimeout(0.2)
		self.stopping = False
		t = threading.Thread(target=self._accept_loop, daemon=True)
		t.start()
		self.threads.append(t)
		return self

	def _accept_loop(self):
		while not self.stopping:
			try:
				c, _ = self.lsock.accept()
			except socket.timeout:
				continue
			except OSError:
				return
			self.connections += 1
			c.settimeout(20)
			t = threading.Thread(target=self._conn, args=(c,), daemon=True)
			t.start()
			self.threads.append(t)

	def _conn(self, c):
		try:
			SinkSession(c, self).serve()
		finally:
			try:
				c.close()
			except OSError:
				pass

	def stop(self):
		self.stopping = True
		if self.lsock is not None:
			try:
				self.lsock.close()
			except OSError:
				pass
		for t in self.threads:
			t.join(5)

	def __enter__(self):
		return self.start()

	def __exit__(self, *a):
		self.stop()
		return False


# --- customer side of ODMR, by hand -----------------------------------------

def cram_response(user, password, challenge_b64):
	chal = base64.b64decode(challenge_b64)
	dig = hmac.new(password.encode(), chal, hashlib.md5).hexdigest()
	return base64.b64encode(("%s %s" % (user, dig)).encode()).decode()


def odmr_login(port, user="demo", password="demo", conn=None):
	"""Connect, EHLO, AUTH CRAM-MD5; returns (Conn, code, text) of AUTH."""
	if conn is None:
		c = Conn(port)
		c.greet_ehlo("customer.test")
	else:
		c = conn
	chal = c.expect(334, "AUTH CRAM-MD5")[4:]
	code, text = c.cmd(cram_response(user, password, chal))
	return c, code, text


def reverse_serve(c, sink):
	"""After the ATRN 250 on Conn c: play the customer's SMTP server."""
	c.s.settimeout(20)
	sess = SinkSession(c.s, sink, buf=c.buf)
	c.buf = b""
	sess.serve()
	return sess


# --- password file, messages, queue ------------------------------------------

def add_user(d, name, password, *domains):
	"""Add an ATRN user to the daemon's password file with odrelayctl."""
	r = d.ctl("passwd", "add", name, *domains, input=password.encode() + b"\n")
	check(r.returncode == 0, "odrelayctl passwd add %s: exit %d: %s%s"
	    % (name, r.returncode, r.out, r.err))


def submit(port, sender, rcpts, data, params=""):
	"""One message by SMTP; returns the queue id (data not dot-stuffed)."""
	c = Conn(port)
	try:
		c.greet_ehlo("client.test")
		c.expect(250, "MAIL FROM:<%s>%s" % (sender, params))
		for r in rcpts:
			c.expect(250, "RCPT TO:<%s>" % r)
		c.expect(354, "DATA")
		c.send(dot_stuff(data) + b".\r\n")
		code, text = c.reply()
		check(code == 250, "message not accepted: %s %s" % (code, text))
		c.cmd("QUIT")
		qid = queued_id(text)
		check(qid, "no queue id in %r" % text)
		return qid
	finally:
		c.close()


def sample_message(tag, extra=b""):
	"""A message with the awkward bits: leading dots, a 1,500-octet line,
	8-bit text, trailing blanks and an empty last line."""
	long_line = b"L" * 1500
	return (b"From: Sender <sender@client.test>\r\n"
	    b"To: user@example.org\r\n"
	    b"Subject: pull test " + tag.encode() + b"\r\n"
	    b"Message-ID: <" + tag.encode() + b"@client.test>\r\n"
	    b"MIME-Version: 1.0\r\n"
	    b"Content-Type: text/plain; charset=utf-8\r\n"
	    b"Content-Transfer-Encoding: 8bit\r\n"
	    b"\r\n"
	    b"Hello " + tag.encode() + b".\r\n"
	    b".leading dot\r\n"
	    b"..two dots\r\n"
	    b".\r\n"		# would end DATA if not stuffed
	    b"gr\xc3\xbc\xc3\x9fe 8-bit \xe2\x82\xac\r\n"
	    b"trailing blanks   \t\r\n"
	    + long_line + b"\r\n" + extra +
	    b"\r\n")


def wait_queue(d, pred, what, timeout=10.0):
	"""Poll odrelayctl queue --json until pred(json) is true."""
	deadline = time.time() + timeout
	j = None
	while time.time() < deadline:
		j = d.queue_json()
		if pred(j):
			return j
		time.sleep(0.2)
	fail("queue never reached state: %s\nqueue: %s" % (what,
	    json.dumps(j)[:3000]))


def msg_rcpts(m):
	"""Recipient addresses still pending in a queue --json entry."""
	out = []
	for key in ("recipients", "rcpts", "rcpt", "to"):
		v = m.get(key)
		if isinstance(v, list):
			for x in v:
				if isinstance(x, str):
					out.append(x)
				elif isinstance(x, dict):
					for kk in ("address", "addr", "rcpt", "to", "recipient"):
						if isinstance(x.get(kk), str):
							st = str(x.get("state", x.get("status", "")))
							if st.lower() not in ("sent", "done", "delivered",
							    "bounced", "failed"):
								out.append(x[kk])
							break
			break
	return sorted(out)


def queue_ids(j):
	return set(m.get("id") or m.get("queue_id") or m.get("qid")
	    for m in json_messages(j))


def run_prog(args, env=None, timeout=40, input=None):
	e = dict(os.environ)
	if env:
		e.update(env)
	r = subprocess.run(args, env=e, input=input, stdout=subprocess.PIPE,
	    stderr=subprocess.STDOUT, timeout=timeout)
	r.out = r.stdout.decode(errors="replace")
	return r


# --- fixture that also checks the daemon's end ------------------------------

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
    "runtime error:")


class PullFixture(Fixture):
	"""odtest.Fixture, and when the body passed: SIGTERM must give exit 0
	and the log must hold no sanitizer report (a passing test's directory
	is removed, so this is the only place they would be seen)."""

	def __exit__(self, et, ev, tb):
		if et is None and self.d.proc is not None:
			try:
				rc = self.d.stop()
				log = self.d.log_text()
				bad = [m for m in SANITIZER_MARKS if m in log]
				check(rc == 0 and not bad, "odrelayd at the end of the "
				    "test: exit %s%s" % (rc, ", sanitizer report: " +
				    bad[0] if bad else ""))
			except Failure as e:
				super().__exit__(Failure, e, None)
				raise
		return super().__exit__(et, ev, tb)
