#!/usr/bin/env python3
"""Hostile peers (issue 17, first part): descriptor exhaustion across both
listeners, ETRN whose MX resolves back to the relay, the overlong ETRN node,
ETRN with and without '@' on a subdomains domain, line limits at their exact
boundaries on both ports, malformed domains and a full disk."""

import errno
import os
import re
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import odtest
from odtest import (Conn, Failure, Fixture, Skip, check, fail, free_port,
    json_messages, queued_id, run_tests, send_message)
from pullsink import Sink, msg_rcpts, wait_queue
from dns import Dns


# A 255-octet domain: four labels of 63 octets and three dots.
LONG_DOMAIN = ".".join([("a" * 62) + c for c in "bcde"])


def test_etrn_node_of_255_octets():
	"""ETRN '@' + a 255-octet domain + '.' wrote one byte past a stack
	buffer (ASan/UBSan report it); now answered normally, and the
	connection stays in step."""
	check(len(LONG_DOMAIN) == 255, "test domain is %d octets" % len(LONG_DOMAIN))
	with Fixture("hostile-etrn255") as d:
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			for node in ("@" + LONG_DOMAIN + ".", LONG_DOMAIN + ".",
			    "#" + LONG_DOMAIN + ".", "@" + LONG_DOMAIN):
				t = c.expect(459, "ETRN " + node, what="ETRN 255")
				check(LONG_DOMAIN + "." not in t,
				    "reply echoes the raw node: %r" % t)
			# 256 octets before the dot: syntax error
			c.expect(501, "ETRN @x" + LONG_DOMAIN + ".")
			c.expect(250, "NOOP")
		finally:
			c.close()


def _pending(d):
	return sorted(a for m in json_messages(d.queue_json()) for a in msg_rcpts(m))


def test_etrn_plain_is_the_domain_only():
	"""subdomains = yes: ETRN example.org flushes example.org only (was:
	its subdomains too); ETRN @example.org then adds the subdomains."""
	sink = Sink().start()
	try:
		doms = ("[domain example.org]\nhold = yes\nsubdomains = yes\n"
		    "route = 127.0.0.1:%d\n" % sink.port)
		with Fixture("hostile-etrn-sub", domains=doms) as d:
			for rcpts in (["a@example.org"], ["b@sub.example.org"],
			    ["c@example.org", "d@deep.sub.example.org"]):
				code, text = send_message(d.smtp_port, "s@sender.test",
				    rcpts, "Subject: sub\r\n\r\nhi\r\n")
				check(code == 250, text)
			c = Conn(d.smtp_port)
			try:
				c.greet_ehlo()
				t = c.expect(253, "ETRN example.org")
				check(" 2 pending" in t, "plain ETRN: %r" % t)
			finally:
				c.close()
			wait_queue(d, lambda j: sorted(a for m in json_messages(j)
			    for a in msg_rcpts(m)) == ["b@sub.example.org",
			    "d@deep.sub.example.org"], "example.org delivered")
			check(sink.delivered_rcpts() == ["a@example.org",
			    "c@example.org"], "plain ETRN delivered %r"
			    % sink.delivered_rcpts())
			c = Conn(d.smtp_port)
			try:
				c.greet_ehlo()
				# nothing left for the domain itself
				c.expect(251, "ETRN example.org")
				t = c.expect(253, "ETRN @example.org")
				check(" 2 pending" in t, "ETRN @: %r" % t)
			finally:
				c.close()
			wait_queue(d, lambda j: not json_messages(j) or
			    all(not msg_rcpts(m) for m in json_messages(j)),
			    "subdomains delivered")
			check(sink.delivered_rcpts() == ["a@example.org",
			    "b@sub.example.org", "c@example.org",
			    "d@deep.sub.example.org"], "after ETRN @: %r"
			    % sink.delivered_rcpts())
			c = Conn(d.smtp_port)
			try:
				c.greet_ehlo()
				c.expect(251, "ETRN @example.org")
			finally:
				c.close()
	finally:
		sink.stop()


def test_etrn_mx_back_to_us_defers():
	"""An MX whose name is not hostname but whose address is our own
	listener (and a route to it, and a proxy_interfaces address): ETRN
	after ETRN delivers nothing back into the relay, bounces nothing, and
	the held mail stays as it was (was: one more Received header per
	round, then a bounce after max_received rounds)."""
	with Dns(mx=[("example.org", "mx.elsewhere.test", 10),
	    ("proxied.test", "mx3.elsewhere.test", 10)],
	    hosts=[("mx.elsewhere.test", "127.0.0.1"),
	    ("mx3.elsewhere.test", "127.0.0.3")]) as dns:
		doms = ("[domain example.org]\nhold = yes\n\n"
		    "[domain routed.test]\nhold = yes\nroute = 127.0.0.1:%d\n\n"
		    "[domain proxied.test]\nhold = yes\n")
		f = Fixture("hostile-selfmx", start=False, domains="")
		with f as d:
			d.text = re.sub(r"(?m)^dns_servers = .*$",
			    "dns_servers = 127.0.0.1:%d" % dns.port, d.text)
			d.text += ("\nmax_received = 4\netrn_rate = 100\ndelivery_port = %d\n"
			    "proxy_interfaces = 127.0.0.3:%d\n"
			    % (d.smtp_port, d.smtp_port))
			d.text += doms % d.smtp_port
			with open(d.conf, "w") as fh:
				fh.write(d.text)
			d.start()
			ids = set()
			for r in ("a@example.org", "b@routed.test", "c@proxied.test"):
				code, text = send_message(d.smtp_port, "s@sender.test",
				    [r], "Subject: loop\r\n\r\nhi\r\n")
				check(code == 250, text)
				ids.add(queued_id(text))
			for rnd in range(6):
				c = Conn(d.smtp_port)
				try:
					c.greet_ehlo()
					for dom in ("example.org", "routed.test",
					    "proxied.test"):
						code, t = c.cmd("ETRN " + dom)
						check(code in (250, 253), "round %d ETRN %s: "
						    "%s %r" % (rnd, dom, code, t))
				finally:
					c.close()
				# let the round finish before the next one
				deadline = time.time() + 5
				while time.time() < deadline:
					if d.log_text().count("points back to this relay") >= \
					    3 * (rnd + 1):
						break
					time.sleep(0.05)
			time.sleep(0.5)
			log = d.log_text()
			check("status=bounced" not in log, "mail bounced:\n%s"
			    % "\n".join(l for l in log.splitlines()
			    if "bounced" in l)[:2000])
			now = d.queue_ids()
			check(now == ids, "queue ids changed: had %s, now %s"
			    % (sorted(ids), sorted(now)))
			for qid in ids:
				body = d.body(qid)
				check(body.count(b"Received:") == 1, "%s has %d Received "
				    "headers" % (qid, body.count(b"Received:")))
			for dom, what in (("example.org", "MX mx.elsewhere.test "
			    "[127.0.0.1]"), ("routed.test", "route "),
			    ("proxied.test", "MX mx3.elsewhere.test [127.0.0.3]")):
				check(re.search(r"%s: configuration error: %s.*points "
				    "back to this relay" % (re.escape(dom), re.escape(what)),
				    log), "no clear log line for %s" % dom)


def _proc_cpu(pid):
	"""User + system CPU seconds of a process."""
	with open("/proc/%d/stat" % pid) as f:
		fields = f.read().rsplit(")", 1)[1].split()
	return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ulimit_wrapper(d, nofile):
	w = os.path.join(d.dir, "odrelayd-ulimit.sh")
	with open(w, "w") as f:
		f.write("#!/bin/sh\nulimit -n %d || exit 1\nexec '%s' \"$@\"\n"
		    % (nofile, os.path.join(odtest.builddir(), "odrelayd")))
	os.chmod(w, 0o755)
	return w


def test_descriptor_exhaustion():
	"""1,100 connections across both listeners with 1,024 descriptors:
	one budget for both listeners refuses the excess with 421 instead of
	running out (was: the ODMR listener spun at 99% CPU writing 'Too many
	open files' without end); the daemon answers again once they close."""
	soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
	want = 1100 + 200
	if hard != resource.RLIM_INFINITY and hard < want:
		raise Skip("the test needs %d descriptors, hard limit %d" % (want, hard))
	if soft != resource.RLIM_INFINITY and soft < want:
		resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
	f = Fixture("hostile-fds", start=False,
	    extra="max_connections_per_ip = 2000\n")
	socks = []
	sel = selectors.DefaultSelector()
	try:
		with f as d:
			w = _ulimit_wrapper(d, 1024)
			orig = odtest.prog
			odtest.prog = lambda name: w if name == "odrelayd" else orig(name)
			try:
				d.start()
			finally:
				odtest.prog = orig
			m = re.search(r"descriptors: limit (\d+).*?(\d+) client "
			    r"connections", d.log_text())
			check(m is not None and m.group(1) == "1024",
			    "no descriptor budget line for a limit of 1024")
			budget = int(m.group(2))
			check(budget < 1024 - 20, "budget %d leaves no reserve" % budget)
			# 800 SMTP, then 300 ODMR: more than the descriptors. In
			# batches, each answered (or given a second) before the
			# next: a flood of SYNs would overrun the listen backlog.
			counts = {"greeted": 0, "refused": 0}
			pending = set()

			def collect(timeout, batch=None):
				"""Read answers until batch (default: all) is answered."""
				deadline = time.time() + timeout
				while pending and (batch is None or batch & pending) \
				    and time.time() < deadline:
					for key, _ in sel.select(0.2):
						data = key.data
						try:
							chunk = key.fileobj.recv(512)
						except (BlockingIOError, InterruptedError):
							continue
						except OSError:
							chunk = b""
						data[1] += chunk
						if b"\r\n" in data[1] or not chunk:
							if data[1].startswith(b"220"):
								counts["greeted"] += 1
							elif data[1].startswith(b"421"):
								counts["refused"] += 1
							sel.unregister(key.fileobj)
							pending.discard(data[0])

			for i in range(1100):
				port = d.smtp_port if i < 800 else d.odmr_port
				sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
				sk.setblocking(False)
				rc = sk.connect_ex(("127.0.0.1", port))
				check(rc in (0, errno.EINPROGRESS), "connect: %s"
				    % os.strerror(rc))
				socks.append(sk)
				pending.add(i)
				sel.register(sk, selectors.EVENT_READ, [i, b""])
				if i % 50 == 49:
					collect(3.0, set(range(i - 49, i + 1)))
			# quiet: a paused or budgeted listener costs nothing
			pid = d.proc.pid
			cpu0, log0 = _proc_cpu(pid), os.path.getsize(d.log)
			time.sleep(2.0)
			cpu1, log1 = _proc_cpu(pid), os.path.getsize(d.log)
			# every connection is greeted or refused, none left hanging
			collect(10.0)
			greeted, refused = counts["greeted"], counts["refused"]
			pending = len(pending)
			print("budget %d: %d greeted, %d refused, %d without an answer; "
			    "%.2f s CPU and %d log bytes in 2 s" % (budget, greeted,
			    refused, pending, cpu1 - cpu0, log1 - log0))
			check(log1 - log0 < 256 * 1024, "the log grew %d bytes in 2 s"
			    % (log1 - log0))
			check(cpu1 - cpu0 < 1.0, "odrelayd used %.2f s of CPU in 2 s "
			    "with every connection idle" % (cpu1 - cpu0))
			check(pending == 0, "%d connections got neither 220 nor 421"
			    % pending)
			check(greeted <= budget and refused >= 1100 - budget,
			    "%d greeted, %d refused with a budget of %d"
			    % (greeted, refused, budget))
			for sk in socks:
				sk.close()
			socks = []
			# answers again on both listeners once they are gone
			for port in (d.smtp_port, d.odmr_port):
				deadline = time.time() + 15
				while True:
					c = Conn(port)
					try:
						code, t = c.reply()
					finally:
						c.close()
					if code == 220:
						break
					check(time.time() < deadline, "port %d still "
					    "answers %s %r" % (port, code, t))
					time.sleep(0.2)
			check("Too many open files" not in d.log_text() or
			    d.log_text().count("Too many open files") < 10,
			    "descriptor errors in the log")
	finally:
		for sk in socks:
			sk.close()
		sel.close()
		resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _line(verb, total):
	"""A command line of exactly total octets, CRLF included."""
	pad = total - len(verb) - 1 - 2
	return (verb + " " + "x" * pad).encode()


def _boundary(port, limit, verb, first=None):
	c = Conn(port)
	try:
		if first is not None:
			first(c)
		code, t = c.cmd(_line(verb, limit))
		check(code != 500, "%s line of %d octets refused: %s %s"
		    % (verb, limit, code, t))
		code, t = c.cmd(_line(verb, limit + 1))
		check(code == 500 and "5.5.2" in t, "%s line of %d octets: "
		    "expected 500 5.5.2, got %s %r" % (verb, limit + 1, code, t))
		# in step: the next reply belongs to the next command
		c.expect(250, "NOOP", what="after the overlong line")
		# an overlong line split across writes, CR and LF apart
		c.send(_line(verb, limit + 1)[:limit])
		time.sleep(0.1)
		c.send(_line(verb, limit + 1)[limit:] + b"\r")
		time.sleep(0.1)
		c.send(b"\n")
		code, t = c.reply()
		check(code == 500, "split overlong line: %s %r" % (code, t))
		c.expect(250, "NOOP", what="after the split overlong line")
	finally:
		c.close()


def _sasl_continuation(c, limit):
	"""A SASL response line of limit octets (CRLF included) is read as
	the response; one more octet is 500 5.5.2, and the session goes on."""
	c.expect(334, "AUTH CRAM-MD5")
	code, t = c.cmd(b"x" * (limit - 2))
	check(code != 500 and code is not None, "SASL line of %d octets: %s %r"
	    % (limit, code, t))
	c.expect(334, "AUTH CRAM-MD5")
	code, t = c.cmd(b"x" * (limit - 1))
	check(code == 500 and "5.5.2" in t, "SASL line of %d octets: %s %r"
	    % (limit + 1, code, t))
	c.expect(250, "NOOP", what="after the overlong SASL line")


def _starttls(c):
	import ssl
	c.greet_ehlo()
	c.expect(220, "STARTTLS")
	ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
	ctx.check_hostname = False
	ctx.verify_mode = ssl.CERT_NONE
	c.s = ctx.wrap_socket(c.s)
	c.expect(250, "EHLO client.test")


def test_line_limits_smtp():
	"""SMTP port: 2,048 octets with CRLF accepted, 2,049 refused; AUTH
	lines 12,288 / 12,289 (the command with its initial response, and
	SASL responses, inside TLS); the session stays in step."""
	with Fixture("hostile-lines-smtp", tls=True) as d:
		ehlo = lambda c: c.greet_ehlo()
		_boundary(d.smtp_port, 2048, "NOOP", ehlo)
		_boundary(d.smtp_port, 12288, "AUTH PLAIN", ehlo)
		_boundary(d.smtp_port, 12288, "AUTH PLAIN", _starttls)
		c = Conn(d.smtp_port)
		try:
			_starttls(c)
			_sasl_continuation(c, 12288)
		finally:
			c.close()


def test_line_limits_odmr():
	"""ODMR port: 4,096 octets with CRLF accepted, 4,097 refused (was
	accepted); AUTH lines 12,288 / 12,289."""
	with Fixture("hostile-lines-odmr") as d:
		ehlo = lambda c: c.greet_ehlo()
		_boundary(d.odmr_port, 4096, "NOOP", ehlo)
		_boundary(d.odmr_port, 12288, "AUTH PLAIN", ehlo)
		c = Conn(d.odmr_port)
		try:
			c.greet_ehlo()
			_sasl_continuation(c, 12288)
		finally:
			c.close()


def test_malformed_domains_refused():
	"""v@a.test.. and other empty labels get 501, never a stored twin."""
	with Fixture("hostile-domains", domains="[domain a.test]\nhold = yes\n") as d:
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<s@sender.test>")
			for bad in ("v@a.test..", "v@a..test", "v@.a.test",
			    "v@a.test...", "v@."):
				t = c.expect(501, "RCPT TO:<%s>" % bad)
				check("5.1.3" in t, "RCPT %s: %r" % (bad, t))
			c.expect(250, "RCPT TO:<v@a.test.>")
			c.expect(250, "RCPT TO:<v@a.test>")
			c.expect(250, "RSET")
			c.expect(501, "MAIL FROM:<s@sender.test..>")
			c.expect(501, "ETRN a.test..")
		finally:
			c.close()


def _tmpfs_wrapper(d, size):
	"""A wrapper that runs odrelayd in its own mount namespace with the
	queue on a tmpfs of the given size (root only)."""
	if os.geteuid() != 0 or shutil.which("unshare") is None:
		raise Skip("needs root and unshare(1) for a private tmpfs")
	r = subprocess.run(["unshare", "-m", "sh", "-c",
	    "mount -t tmpfs -o size=64k none /mnt"], stdout=subprocess.PIPE,
	    stderr=subprocess.STDOUT, timeout=10)
	if r.returncode != 0:
		raise Skip("cannot mount a tmpfs in a mount namespace: %s"
		    % r.stdout.decode(errors="replace").strip())
	os.makedirs(d.queue_dir, exist_ok=True)
	w = os.path.join(d.dir, "odrelayd-tmpfs.sh")
	# unshare without --fork execs in place: the daemon keeps the PID the
	# test signals.
	with open(w, "w") as f:
		f.write("#!/bin/sh\nset -e\n"
		    "if [ -z \"$ODRELAY_IN_NS\" ]; then\n"
		    "\tODRELAY_IN_NS=1 exec unshare -m \"$0\" \"$@\"\n"
		    "fi\n"
		    "mount -t tmpfs -o size=%s,mode=0755 odrelay-test '%s'\n"
		    "chown nobody '%s'\n"
		    "exec '%s' \"$@\"\n" % (size, d.queue_dir, d.queue_dir,
		    os.path.join(odtest.builddir(), "odrelayd")))
	os.chmod(w, 0o755)
	return w


def test_full_disk_answers_452():
	"""The queue's file system fills up before its map: the message that
	does not fit gets 452 4.3.1 (was 451 4.3.0 from ENOSPC), whether the
	write fails or the free-space reserve refuses it first."""
	d0 = Fixture("hostile-disk", start=False, extra="queue_map_size = 64M\n",
	    domains="[domain example.org]\nhold = yes\n")
	with d0 as d:
		w = _tmpfs_wrapper(d, "3m")
		orig = odtest.prog
		odtest.prog = lambda name: w if name == "odrelayd" else orig(name)
		try:
			d.start()
		finally:
			odtest.prog = orig
		body = "Subject: fill\r\n\r\n" + ("y" * 76 + "\r\n") * 2000
		n = 0
		last = None
		for _ in range(40):
			# refused at MAIL, RCPT or end of data: any is fine, as
			# long as it says storage
			c = Conn(d.smtp_port)
			try:
				c.greet_ehlo()
				for cmd in ("MAIL FROM:<s@sender.test>",
				    "RCPT TO:<b@example.org>", "DATA"):
					code, text = c.cmd(cmd)
					if code not in (250, 354):
						break
				else:
					c.send(body.encode() + b".\r\n")
					code, text = c.reply()
			finally:
				c.close()
			last = (code, text)
			if code != 250:
				break
			n += 1
		check(last[0] != 250, "a 3 MB file system took %d messages of "
		    "150 kB" % n)
		check(last[0] == 452 and "4.3.1" in last[1],
		    "full disk answered %s %r (after %d accepted)" % (last[0],
		    last[1], n))
		# the relay still answers, and a small message is not refused
		# for a reason other than storage
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(250, "NOOP")
		finally:
			c.close()


if __name__ == "__main__":
	run_tests([
	    test_etrn_node_of_255_octets,
	    test_etrn_plain_is_the_domain_only,
	    test_etrn_mx_back_to_us_defers,
	    test_descriptor_exhaustion,
	    test_line_limits_smtp,
	    test_line_limits_odmr,
	    test_malformed_domains_refused,
	    test_full_disk_answers_452,
	], "hostile_a")
