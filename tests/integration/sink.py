"""sink - a scriptable, recording SMTP server for odrelay's integration tests.

The daemon delivers to it over loopback.  Each transaction is recorded
(EHLO name, MAIL FROM, accepted RCPTs, the message bytes exactly as
received after removing the dot-stuffing) and the replies can be scripted:
a reply per recipient, a reply at end-of-data, dropping the connection in
the middle of DATA, which extensions to advertise.  Python 3 stdlib only.
"""

import socket
import socketserver
import ssl
import threading
import time

from odtest import Failure, free_port


class Txn:
	"""One MAIL transaction as the sink saw it."""

	def __init__(self, helo, tls):
		self.helo = helo
		self.tls = tls
		self.mail_from = None
		self.mail_params = ""
		self.rcpts = []		# accepted recipients (as given, no <>)
		self.refused = []	# (address, reply) refused at RCPT
		self.data = None	# bytes after un-dot-stuffing, None if no DATA
		self.reply = None	# our reply to end-of-data
		self.accepted = False	# 2xx at end-of-data
		self.aborted = False	# connection dropped (by us or the client)

	def __repr__(self):
		return ("Txn(from=%r rcpts=%r refused=%r size=%s reply=%r%s)"
		    % (self.mail_from, self.rcpts, [a for a, _ in self.refused],
		    None if self.data is None else len(self.data), self.reply,
		    " aborted" if self.aborted else ""))


def _addr(arg):
	"""The address inside FROM:<...> / TO:<...>, and the parameters."""
	lt = arg.find("<")
	gt = arg.find(">", lt + 1)
	if lt < 0 or gt < 0:
		return None, ""
	return arg[lt + 1:gt], arg[gt + 1:].strip()


class _Handler(socketserver.StreamRequestHandler):
	timeout = 30

	def setup(self):
		super().setup()
		self.sink = self.server.sink
		self.tls = False

	def out(self, line):
		self.wfile.write(line.encode() + b"\r\n")
		self.wfile.flush()

	def readline(self):
		line = self.rfile.readline(65536)
		if not line:
			return None
		return line

	def handle(self):
		sink = self.sink
		with sink.lock:
			sink.connections += 1
		self.out("220 %s ESMTP sink" % sink.name)
		helo = None
		txn = None
		while True:
			raw = self.readline()
			if raw is None:
				if txn is not None:
					txn.aborted = True
					sink._record(txn)
				return
			line = raw.decode("utf-8", "replace").rstrip("\r\n")
			with sink.lock:
				sink.commands.append(line)
			verb = line.split(" ", 1)[0].upper()
			arg = line[len(verb):].strip()
			if verb == "EHLO":
				helo = arg
				txn = None
				exts = []
				if sink.pipelining:
					exts.append("PIPELINING")
				if sink.size:
					exts.append("SIZE %d" % sink.size)
				exts.append("8BITMIME")
				if sink.smtputf8:
					exts.append("SMTPUTF8")
				if sink.starttls and not self.tls:
					exts.append("STARTTLS")
				lines = [sink.name] + exts
				for l in lines[:-1]:
					self.wfile.write(b"250-" + l.encode() + b"\r\n")
				self.out("250 " + lines[-1])
			elif verb == "HELO":
				helo = arg
				txn = None
				self.out("250 " + sink.name)
			elif verb == "STARTTLS":
				if not sink.starttls or self.tls:
					self.out("502 5.5.1 not offered")
					continue
				self.out("220 2.0.0 go ahead")
				ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
				ctx.load_cert_chain(sink.cert, sink.key)
				try:
					conn = ctx.wrap_socket(self.connection,
					    server_side=True)
				except (ssl.SSLError, OSError):
					return
				self.connection = self.request = conn
				self.rfile = conn.makefile("rb")
				self.wfile = conn.makefile("wb")
				self.tls = True
				helo = None
				txn = None
			elif verb == "MAIL":
				if helo is None:
					self.out("503 5.5.1 EHLO first")
					continue
				if txn is not None:
					self.out("503 5.5.1 nested MAIL")
					continue
				a, params = _addr(arg)
				if a is None:
					self.out("501 5.5.4 syntax")
					continue
				txn = Txn(helo, self.tls)
				txn.mail_from = a
				txn.mail_params = params
				self.out("250 2.1.0 ok")
			elif verb == "RCPT":
				if txn is None:
					self.out("503 5.5.1 MAIL first")
					continue
				a, _ = _addr(arg)
				if a is None:
					self.out("501 5.5.4 syntax")
					continue
				rep = sink.rcpt_reply(a)
				if (rep.startswith("2") and sink.max_rcpts and
				    len(txn.rcpts) >= sink.max_rcpts):
					rep = "452 4.5.3 too many recipients"
				if rep.startswith("2"):
					txn.rcpts.append(a)
				else:
					txn.refused.append((a, rep))
				self.out(rep)
			elif verb == "DATA":
				if txn is None or not txn.rcpts:
					self.out("503 5.5.1 no valid recipients")
					# Record what the client tried.
					if txn is not None:
						sink._record(txn)
						txn = None
					continue
				self.out("354 go ahead")
				if not self.read_data(txn):
					return
				txn = None
			elif verb == "RSET":
				if txn is not None:
					sink._record(txn)
				txn = None
				self.out("250 2.0.0 ok")
			elif verb == "NOOP":
				self.out("250 2.0.0 ok")
			elif verb == "QUIT":
				if txn is not None:
					sink._record(txn)
				self.out("221 2.0.0 bye")
				return
			else:
				self.out("502 5.5.1 unknown command")

	def read_data(self, txn):
		"""Read the message; False when the connection is gone."""
		sink = self.sink
		lines = []
		drop = sink.take_drop()
		while True:
			raw = self.readline()
			if raw is None:
				txn.aborted = True
				txn.data = b"".join(lines)
				sink._record(txn)
				return False
			if raw == b".\r\n":
				break
			if raw.startswith(b"."):
				raw = raw[1:]
			lines.append(raw)
			if drop and len(lines) >= 2:
				# Drop the connection in the middle of DATA.
				txn.aborted = True
				txn.data = b"".join(lines)
				sink._record(txn)
				try:
					self.connection.shutdown(socket.SHUT_RDWR)
				except OSError:
					pass
				return False
		txn.data = b"".join(lines)
		if sink.data_delay:
			time.sleep(sink.data_delay)
		rep = sink.take_data_reply()
		txn.reply = rep
		txn.accepted = rep.startswith("2")
		sink._record(txn)
		self.out(rep)
		return True


class _Server(socketserver.ThreadingTCPServer):
	allow_reuse_address = True
	daemon_threads = True


class Sink:
	"""A recording SMTP server on host:port (port reserved at creation)."""

	def __init__(self, host="127.0.0.1", port=None, name="sink.test",
	    start=True, pipelining=True, size=100000000, starttls=False,
	    cert=None, key=None, smtputf8=False):
		self.host = host
		self.port = port if port is not None else free_port(host=host)
		self.name = name
		self.pipelining = pipelining
		self.size = size
		self.starttls = starttls
		self.smtputf8 = smtputf8
		self.cert = cert
		self.key = key
		self.lock = threading.Lock()
		self.txns = []
		self.commands = []
		self.connections = 0
		# Scripting: address (lower case) -> reply line.
		self.rcpt_replies = {}
		# Replies for the next end-of-data answers, then the default.
		self.data_replies = []
		self.data_default = "250 2.0.0 Ok: accepted by sink"
		# How many of the next DATA phases to drop half way.
		self.drop_data = 0
		# More accepted recipients than this in one transaction: 452.
		self.max_rcpts = 0
		# Seconds to wait before answering end-of-data (slow server).
		self.data_delay = 0.0
		self.srv = None
		self.thread = None
		if start:
			self.start()

	# --- scripting ------------------------------------------------------
	def rcpt_reply(self, addr):
		with self.lock:
			return self.rcpt_replies.get(addr.lower(),
			    "250 2.1.5 ok")

	def take_data_reply(self):
		with self.lock:
			if self.data_replies:
				return self.data_replies.pop(0)
			return self.data_default

	def take_drop(self):
		with self.lock:
			if self.drop_data > 0:
				self.drop_data -= 1
				return True
			return False

	def _record(self, txn):
		with self.lock:
			self.txns.append(txn)

	# --- life cycle -----------------------------------------------------
	def start(self):
		self.srv = _Server((self.host, self.port), _Handler,
		    bind_and_activate=False)
		self.srv.sink = self
		self.srv.server_bind()
		self.srv.server_activate()
		self.thread = threading.Thread(target=self.srv.serve_forever,
		    kwargs={"poll_interval": 0.05}, daemon=True)
		self.thread.start()
		return self

	def stop(self):
		if self.srv is not None:
			self.srv.shutdown()
			self.srv.server_close()
			self.srv = None

	def __enter__(self):
		return self

	def __exit__(self, *a):
		self.stop()
		return False

	# --- inspection -----------------------------------------------------
	def accepted(self):
		"""Transactions answered 2xx at end-of-data."""
		with self.lock:
			return [t for t in self.txns if t.accepted]

	def delivered_rcpts(self):
		"""Every recipient of an accepted transaction (with repeats)."""
		out = []
		for t in self.accepted():
			out.extend(a.lower() for a in t.rcpts)
		return out

	def wait(self, cond, timeout=10.0, what="condition"):
		"""Poll cond() until true; Failure with the sink's state if not."""
		deadline = time.time() + timeout
		while time.time() < deadline:
			if cond():
				return
			time.sleep(0.05)
		if cond():
			return
		with self.lock:
			state = "\n".join(repr(t) for t in self.txns) or "(none)"
			ncon = self.connections
		raise Failure("sink %s:%d: timed out after %.0f s waiting for %s; "
		    "%d connections, transactions:\n%s" % (self.host, self.port,
		    timeout, what, ncon, state))

	def wait_accepted(self, n, timeout=10.0):
		self.wait(lambda: len(self.accepted()) >= n, timeout,
		    "%d accepted transactions" % n)
		return self.accepted()
