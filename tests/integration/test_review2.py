#!/usr/bin/env python3
"""Review of privilege separation (issue 14), the operator's first hour
(issue 18) and the hostile-peer fixes (issue 17) as a hostile peer, a
compromised session process and a careful operator would attack them.
Each test here failed on the tree before its fix."""

import base64
import hashlib
import hmac
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Fixture, Skip, check, fail, free_port, run_tests,
    send_message)
import test_auth as ta


def scrape(port):
	with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
	    timeout=10) as r:
		return r.read().decode()


def series_keys(body):
	"""The name{labels} part of every sample line."""
	keys = []
	for line in body.splitlines():
		if line.startswith("#") or not line.strip():
			continue
		keys.append(line.rsplit(" ", 1)[0])
	return keys


def promtool_check(body):
	if shutil.which("promtool") is None:
		return None
	r = subprocess.run(["promtool", "check", "metrics"], input=body.encode(),
	    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
	return r.returncode, r.stdout.decode(errors="replace")


def test_metrics_hostile_labels():
	"""A milter socket path with a quote and a backslash, long enough
	(over 63 octets) that its label was cut: the label was written
	unescaped (a broken exposition), and the cut label never matched
	itself again, so every failure added one more series with the same
	labels (until 24, then "other")."""
	mport = free_port()
	# A short directory: TMPDIR may be long (CI's is), and a unix socket
	# path must stay under 108 octets.
	sdir = tempfile.mkdtemp(prefix="r2m-", dir="/tmp")
	name = 'mil"ter\\x'
	pad = 80 - len("unix:") - len(sdir) - 1 - len(name)
	sockpath = os.path.join(sdir, name + "p" * max(pad, 1))
	check(64 < len("unix:" + sockpath) < 100, "socket path length %d"
	    % len("unix:" + sockpath))
	extra = ("metrics_listen = 127.0.0.1:%d\nmilters = unix:%s\n"
	    "milter_default_action = accept\n" % (mport, sockpath))
	with Fixture("review2-metrics", extra=extra) as d:
		for i in range(3):
			code, text = send_message(d.smtp_port, "s@client.test",
			    ["x@example.org"],
			    "Subject: %d\r\n\r\nbody\r\n" % i)
			check(code == 250, "message %d: %d %s" % (i, code, text))
		body = scrape(mport)
		lines = [l for l in body.splitlines()
		    if l.startswith("odrelay_milter_failures_total")]
		check(len(lines) == 1, "one series for the milter's failures "
		    "expected:\n%s" % "\n".join(lines))
		esc = sockpath.replace("\\", "\\\\").replace('"', '\\"')
		check(('milter="unix:%s"' % esc) in lines[0],
		    "label not escaped or cut: %s" % lines[0])
		check(lines[0].endswith(" 3"), "3 failures expected: %s" % lines[0])
		keys = series_keys(body)
		dup = sorted(set(k for k in keys if keys.count(k) > 1))
		check(not dup, "duplicate series: %s" % dup[:5])
		pc = promtool_check(body)
		if pc is not None:
			# promtool's lint warnings (e.g. counter names) exit 3;
			# a parse error exits 1.
			check(pc[0] != 1 and "error while linting" not in pc[1],
			    "promtool check metrics: %s" % pc[1][:2000])
	shutil.rmtree(sdir, ignore_errors=True)


QUEUE_TROUBLE = ("odrelay_queue_corrupt_records_total",
    "odrelay_queue_body_unreadable_total",
    "odrelay_queue_write_failures_total",
    "odrelay_queue_notices_dropped_total")


def sample(body, name):
	"""The value of an unlabelled series, or None."""
	for line in body.splitlines():
		if line.startswith(name + " "):
			return float(line.split()[1])
	return None


def test_metrics_queue_trouble():
	"""The queue's trouble counters (queue_stats) are exported as counters
	with HELP and TYPE, the page still passes promtool check metrics, and
	a record made corrupt on disk while the daemon was stopped counts in
	odrelay_queue_corrupt_records_total once the daemon reads it."""
	mport = free_port()
	extra = "metrics_listen = 127.0.0.1:%d\n" % mport
	sender = "trouble-marker-7q@client.test"
	with Fixture("review2-qtrouble", extra=extra) as d:
		body = scrape(mport)
		for name in QUEUE_TROUBLE:
			check("# TYPE %s counter\n" % name in body and
			    "# HELP %s " % name in body, "no HELP/TYPE for %s" % name)
			check(sample(body, name) == 0, "%s = %s on a sound queue"
			    % (name, sample(body, name)))
		pc = promtool_check(body)
		if pc is not None:
			check(pc[0] != 1 and "error while linting" not in pc[1],
			    "promtool check metrics: %s" % pc[1][:2000])
		code, text = send_message(d.smtp_port, sender, ["x@example.org"],
		    "Subject: trouble\r\n\r\nbody\r\n")
		check(code == 250, "message: %d %s" % (code, text))
		check(d.stop() == 0, "odrelayd did not stop cleanly")
		# The sender's length field (4 octets before it) made huge:
		# LMDB does not check values, the record decoder must.
		mark = struct.pack(">I", len(sender)) + sender.encode()
		hit = 0
		for root, _, files in os.walk(d.queue_dir):
			for f in files:
				if not f.endswith(".mdb"):
					continue
				p = os.path.join(root, f)
				with open(p, "rb") as fh:
					data = bytearray(fh.read())
				at = data.find(mark)
				while at >= 0:
					data[at:at + 4] = b"\xff\xff\xff\xf0"
					hit += 1
					at = data.find(mark, at + 4)
				with open(p, "wb") as fh:
					fh.write(data)
		check(hit > 0, "test setup: the envelope was not found on disk")
		d.start()
		# Anything that reads the envelope meets it: ETRN does.
		c = ta.conn_from(d.smtp_port)
		c.greet_ehlo()
		c.cmd("ETRN example.org")
		c.close()
		deadline = time.time() + 10
		while True:
			body = scrape(mport)
			n = sample(body, "odrelay_queue_corrupt_records_total")
			if n is not None and n >= 1:
				break
			check(time.time() < deadline, "corrupt record not counted: "
			    "%s\n%s" % (n, "\n".join(d.log_text().splitlines()[-20:])))
			time.sleep(0.2)
		while "corrupt queue record" not in d.log_text():
			check(time.time() < deadline, "no notice logged")
			time.sleep(0.1)
		pc = promtool_check(body)
		if pc is not None:
			check(pc[0] != 1 and "error while linting" not in pc[1],
			    "promtool check metrics: %s" % pc[1][:2000])


def mid_exchanges(d, n):
	"""n ODMR sessions stopped in the middle of an exchange: CRAM-MD5
	(challenge received) and SCRAM-SHA-256 (server-first received),
	alternating. Returns [(conn, kind, state)]."""
	out = []
	for i in range(n):
		c = ta.conn_from(d.odmr_port, timeout=30)
		c.greet_ehlo("customer.test")
		if i % 2 == 0:
			chal = c.expect(334, "AUTH CRAM-MD5")[4:]
			out.append((c, "cram", chal))
		else:
			cn = ta.b64(os.urandom(18))
			bare = "n=alice,r=" + cn
			first = c.expect(334, "AUTH SCRAM-SHA-256 " +
			    ta.b64("n,," + bare))[4:]
			out.append((c, "scram", (bare, first)))
	return out


def finish(c, kind, state, password):
	"""The client's next line of the exchange; (code, text)."""
	if kind == "cram":
		return c.cmd(ta.cram_response("alice", password, state))
	bare, first_b64 = state
	first = base64.b64decode(first_b64).decode()
	attrs = dict(a.split("=", 1) for a in first.split(","))
	salted = hashlib.pbkdf2_hmac("sha256", password.encode(),
	    base64.b64decode(attrs["s"]), int(attrs["i"]))
	ckey = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
	stored = hashlib.sha256(ckey).digest()
	final = "c=biws,r=" + attrs["r"]
	am = ",".join((bare, first, final)).encode()
	sig = hmac.new(stored, am, hashlib.sha256).digest()
	proof = bytes(a ^ b for a, b in zip(ckey, sig))
	code, text = c.cmd(ta.b64(final + ",p=" + ta.b64(proof)))
	if code != 334:
		return code, text
	return c.cmd("")


def test_reload_garbage_passwd_mid_exchanges():
	"""SIGHUP with the password file replaced by garbage while 16
	exchanges are half done: the old file stays in force (error logged),
	every exchange ends 235 and new logins work."""
	with ta.daemon("review2-hup") as d:
		ta.two_users(d)
		d.start()
		ta.auth_pid(d)
		open_x = mid_exchanges(d, 16)
		good = open(d.passwd, "rb").read()
		with open(d.passwd, "wb") as f:
			f.write(b"alice:this is not an entry\n\x00\xff garbage\n")
		os.kill(d.proc.pid, signal.SIGHUP)
		broken = re.compile(r"password file .* has errors, keeping the old")
		deadline = time.time() + 10
		while not broken.search(d.log_text()):
			check(time.time() < deadline, "broken reload not logged")
			time.sleep(0.05)
		for c, kind, st in open_x:
			code, text = finish(c, kind, st, "alice-pw")
			check(code == 235, "%s exchange across a broken reload: %s %r"
			    % (kind, code, text))
			c.close()
		check(ta.try_auth(d.odmr_port, "alice", "alice-pw") == 235,
		    "new login after a broken reload")
		with open(d.passwd, "wb") as f:
			f.write(good)


def test_auth_killed_many_exchanges():
	"""SIGKILL of the auth process with 24 sessions in the middle of
	CRAM-MD5 and SCRAM-SHA-256 exchanges, 8 of them waiting for a
	delayed failure: each gets 454 4.7.0, stays in step (NOOP), and all
	log in once the auth process is back."""
	with ta.daemon("review2-kill", extra="auth_delay_max = 4\n") as d:
		ta.two_users(d)
		d.start()
		apid = ta.auth_pid(d)
		open_x = mid_exchanges(d, 16)
		waiting = []
		for i in range(8):
			c = ta.conn_from(d.odmr_port, src="127.0.0.%d" % (10 + i),
			    timeout=30)
			c.greet_ehlo("customer.test")
			chal = c.expect(334, "AUTH CRAM-MD5")[4:]
			c.send((ta.cram_response("bob", "wrong", chal) +
			    "\r\n").encode())
			waiting.append(c)
		time.sleep(0.3)
		os.kill(apid, signal.SIGKILL)
		for c in waiting:
			code, text = c.reply()
			check(code in (454, 535), "delayed failure across the kill: "
			    "%s %r" % (code, text))
			check(c.cmd("NOOP")[0] == 250, "session out of step")
			c.close()
		for c, kind, st in open_x:
			code, text = finish(c, kind, st, "alice-pw")
			check(code == 454 and "4.7.0" in text, "%s across the kill: "
			    "%s %r" % (kind, code, text))
			check(c.cmd("NOOP")[0] == 250, "session out of step")
			c.close()
		deadline = time.time() + 20
		while ta.try_auth(d.odmr_port, "alice", "alice-pw") != 235:
			check(time.time() < deadline, "AUTH did not recover")
			time.sleep(0.2)
		ok = 0
		for kind in ("cram", "scram") * 4:
			x = mid_exchanges(d, 2)
			for c, k, st in x:
				ok += finish(c, k, st, "alice-pw")[0] == 235
				c.close()
		check(ok == 16, "logins after recovery: %d of 16" % ok)


def ulimit_start(d, nofile):
	"""Start d under a descriptor limit of nofile (soft and hard)."""
	import odtest
	w = os.path.join(d.dir, "odrelayd-ulimit.sh")
	with open(w, "w") as f:
		f.write("#!/bin/sh\nulimit -n %d || exit 1\nexec '%s' \"$@\"\n"
		    % (nofile, os.path.join(odtest.builddir(), "odrelayd")))
	os.chmod(w, 0o755)
	orig = odtest.prog
	odtest.prog = lambda name: w if name == "odrelayd" else orig(name)
	try:
		d.start()
	finally:
		odtest.prog = orig


def set_global(d, extra):
	"""Rewrite d's configuration with extra global settings."""
	head, sep, tail = d.text.partition("[domain")
	d.text = head + extra + "\n" + sep + tail
	with open(d.conf, "w") as f:
		f.write(d.text)


def greet_counts(port, n):
	"""Open n connections; (greeted, refused, socks) once each answered."""
	socks, greeted, refused = [], 0, 0
	for _ in range(n):
		c = ta.conn_from(port, timeout=10)
		code, _ = c.reply()
		greeted += code == 220
		refused += code == 421
		socks.append(c)
	return greeted, refused, socks


def test_budget_follows_reload():
	"""Milters added by SIGHUP make each SMTP session hold more
	descriptors (a connection to each, and the body's spool file): the
	connection budget must shrink with them, or sessions run out of
	descriptors. Was: computed once at start (and with one descriptor per
	milter, without the spool file)."""
	with Fixture("review2-budget", start=False,
	    extra="max_connections_per_ip = 1000\n") as d:
		ulimit_start(d, 200)
		budget_re = re.compile(r"descriptors: limit 200, (\d+) reserved, "
		    r"(\d+) client connections")
		m = budget_re.findall(d.log_text())
		check(m, "no budget line")
		reserve, before = int(m[-1][0]), int(m[-1][1])
		check(before == 200 - reserve, "budget %d, reserve %d" %
		    (before, reserve))
		milters = ", ".join("unix:%s/m%d.sock" % (d.dir, i)
		    for i in range(4))
		set_global(d, "milters = %s\nmilter_default_action = accept\n"
		    % milters)
		os.kill(d.proc.pid, signal.SIGHUP)
		deadline = time.time() + 10
		while "reload: configuration" not in d.log_text():
			check(time.time() < deadline, "no reload")
			time.sleep(0.05)
		want = (200 - reserve) // 6
		m = budget_re.findall(d.log_text())
		check(int(m[-1][1]) == want, "budget after adding 4 milters: %s, "
		    "want %d" % (m[-1][1], want))
		greeted, refused, socks = greet_counts(d.smtp_port, want + 3)
		for c in socks:
			c.close()
		check(greeted == want and refused == 3, "%d greeted, %d refused "
		    "with a budget of %d" % (greeted, refused, want))


def test_check_control_socket_dir():
	"""odrelayd -n said OK for a control socket in a directory
	run_as_user cannot write, and the daemon then exited 1 ("cannot
	listen: Permission denied") after dropping privileges."""
	if os.geteuid() != 0:
		raise Skip("needs root (run_as_user nobody)")
	import odtest
	with Fixture("review2-ctl", start=False) as d:
		run = os.path.join(d.dir, "run")
		os.mkdir(run, 0o755)		# root's: nobody cannot write
		sock = os.path.join(run, "control.sock")
		d.text = d.text.replace("control_socket = " + d.sock,
		    "control_socket = " + sock)
		d.sock = sock
		with open(d.conf, "w") as f:
			f.write(d.text)
		r = odtest.run([odtest.prog("odrelayd"), "-n", "-c", d.conf])
		check(r.returncode != 0 and "control_socket" in r.out and
		    "nobody" in r.out, "odrelayd -n on a control socket nobody "
		    "cannot create: exit %d %r" % (r.returncode, r.out))
		try:		# and the daemon agrees: it exits at start
			d.start()
		except odtest.Failure as e:
			check("exited with status" in str(e), str(e))
		deadline = time.time() + 10
		while d.running() and time.time() < deadline:
			time.sleep(0.05)
		check(not d.running() and d.proc.returncode != 0,
		    "daemon started although -n refused")
		check("control socket" in d.log_text(), "not the control socket")
		d.expected_exit = True
		os.chown(run, pwd.getpwnam("nobody").pw_uid, -1)
		r = odtest.run([odtest.prog("odrelayd"), "-n", "-c", d.conf])
		check(r.returncode == 0, "odrelayd -n once nobody owns the "
		    "directory: exit %d %r" % (r.returncode, r.out))


def test_last_atrn_every_domain():
	"""A customer with 30 domains (more than the 512-octet log list): a
	pull noted the last ATRN only for the domains that fit the log line,
	so the others showed no pull (odrelayctl queue, the metrics, the
	OdrelayCustomerNotPulled alert)."""
	from pullsink import PullFixture, Sink, add_user, odmr_login, \
	    reverse_serve, submit, sample_message
	names = ["customer-%02d.long-domain-name.example" % i for i in range(30)]
	doms = "".join("[domain %s]\nhold = yes\n\n" % n for n in names)
	mport = free_port()
	with PullFixture("review2-atrn", domains=doms, start=False,
	    extra="metrics_listen = 127.0.0.1:%d\n"
	    % mport) as d, Sink() as sink:
		add_user(d, "many", "many-pw", *names)
		d.start()
		# No mail: 453, every domain noted.
		c, code, text = odmr_login(d.odmr_port, "many", "many-pw")
		check(code == 235, "AUTH: %s %s" % (code, text))
		code, text = c.cmd("ATRN")
		check(code == 453, "ATRN without mail: %s %s" % (code, text))
		c.close()
		deadline = time.time() + 10
		while True:	# noted by the queue's writer thread
			last = re.findall(r'odrelay_domain_last_atrn_timestamp_'
			    r'seconds\{domain="([^"]+)"\} (\d+)', scrape(mport))
			unpulled = [n for n, v in last if v == "0"]
			if len(last) == 30 and not unpulled:
				break
			check(time.time() < deadline, "domains without their pull "
			    "after a 453: %s" % unpulled)
			time.sleep(0.1)
	mport = free_port()
	with PullFixture("review2-atrn2", domains=doms, start=False,
	    extra="metrics_listen = 127.0.0.1:%d\n" % mport) as d, \
	    Sink() as sink:
		add_user(d, "many", "many-pw", *names)
		d.start()
		submit(d.smtp_port, "s@client.test", ["u@" + names[-1]],
		    sample_message("last"))
		c, code, text = odmr_login(d.odmr_port, "many", "many-pw")
		check(c.cmd("ATRN")[0] == 250, "ATRN with mail")
		reverse_serve(c, sink)
		c.close()
		deadline = time.time() + 10
		while True:
			last = dict(re.findall(r'odrelay_domain_last_atrn_timestamp'
			    r'_seconds\{domain="([^"]+)"\} (\d+)', scrape(mport)))
			if last.get(names[-1], "0") != "0":
				break
			check(time.time() < deadline, "the last domain's pull was "
			    "not noted: %s" % last.get(names[-1]))
			time.sleep(0.1)


def test_reload_at_budget():
	"""Both listeners at the connection budget, then SIGHUP with TLS (the
	helper passes the certificate and key as descriptors): the reload
	succeeds, the excess still gets 421, and once the connections close
	both ports greet and STARTTLS works."""
	with Fixture("review2-full", start=False, tls=True,
	    extra="max_connections_per_ip = 1000\n") as d:
		ulimit_start(d, 160)
		m = re.findall(r"descriptors: limit 160, (\d+) reserved, (\d+) "
		    r"client", d.log_text())
		budget = int(m[-1][1])
		half = budget // 2
		g1, r1, s1 = greet_counts(d.smtp_port, half)
		g2, r2, s2 = greet_counts(d.odmr_port, budget - half + 2)
		check(g1 + g2 == budget and r1 + r2 == 2, "%d+%d greeted, %d+%d "
		    "refused, budget %d" % (g1, g2, r1, r2, budget))
		os.kill(d.proc.pid, signal.SIGHUP)
		deadline = time.time() + 10
		while "reload: configuration" not in d.log_text():
			check(time.time() < deadline, "no reload at the budget:\n%s"
			    % "\n".join(d.log_text().splitlines()[-8:]))
			time.sleep(0.05)
		check("TLS setup failed" not in d.log_text(), "TLS reload failed")
		g3, r3, s3 = greet_counts(d.smtp_port, 1)
		check(r3 == 1, "over the budget after the reload: greeted")
		for c in s1 + s2 + s3:
			c.close()
		for port in (d.smtp_port, d.odmr_port):
			deadline = time.time() + 10
			while True:
				c = ta.conn_from(port)
				code, _ = c.reply()
				if code == 220:
					break
				c.close()
				check(time.time() < deadline, "port %d: %d" % (port, code))
				time.sleep(0.1)
			if port == d.smtp_port:
				c.cmd("EHLO x.test")
				ta.starttls(c)
				check(c.cmd("EHLO x.test")[0] == 250, "EHLO in TLS")
			c.close()
		check("Too many open files" not in d.log_text(),
		    "descriptors ran out")


def test_broken_passwd_without_odmr():
	"""A backup MX without ODMR whose password file exists (so SMTP AUTH
	is on) but is broken: odrelayd -n said OK, and the daemon started
	with an auth process that died at once, again and again, so AUTH
	answered 454 for good. Both now refuse (exit 2) naming the file."""
	import odtest
	with Fixture("review2-nodmr", start=False) as d:
		d.text = re.sub(r"(?m)^odmr_listen = .*$", "odmr_listen =", d.text)
		with open(d.conf, "w") as f:
			f.write(d.text)
		with open(d.passwd, "w") as f:
			f.write("alice:not an entry\n")
		r = odtest.run([odtest.prog("odrelayd"), "-n", "-c", d.conf])
		check(r.returncode == 2 and d.passwd in r.out, "odrelayd -n on a "
		    "broken password file without ODMR: exit %d %r"
		    % (r.returncode, r.out))
		try:
			d.start()
		except odtest.Failure as e:
			check("status 2" in str(e), str(e))
		deadline = time.time() + 10
		while d.running() and time.time() < deadline:
			time.sleep(0.05)
		check(not d.running() and d.proc.returncode == 2,
		    "the daemon started on a broken password file (SMTP AUTH "
		    "would answer 454 for good)")
		d.expected_exit = True


def test_metrics_listener_out_of_descriptors():
	"""Idle connections to the metrics endpoint until descriptors run out:
	its listener (evhttp's, no error callback) retried accept() at once
	and libevent logged every failure: millions of 'Too many open files'
	lines in seconds, at full CPU. It pauses now, logs once, and answers
	again (as do the SMTP and ODMR listeners) once they are gone."""
	mport = free_port()
	with Fixture("review2-mfd", start=False,
	    extra="metrics_listen = 127.0.0.1:%d\n" % mport) as d:
		ulimit_start(d, 200)
		socks = []
		try:
			for _ in range(220):
				socks.append(socket.create_connection(("127.0.0.1",
				    mport), timeout=5))
			size0 = os.path.getsize(d.log)
			time.sleep(2)
			grown = os.path.getsize(d.log) - size0
			check(grown < 64 * 1024, "the log grew %d bytes in 2 s with "
			    "the metrics listener out of descriptors" % grown)
		finally:
			for s in socks:
				s.close()
		deadline = time.time() + 10
		while True:
			try:
				body = scrape(mport)
				break
			except OSError as e:
				check(time.time() < deadline, "metrics do not answer "
				    "again: %s" % e)
				time.sleep(0.2)
		check("odrelay_messages_received_total" in body, "metrics body")
		c = ta.conn_from(d.smtp_port)
		check(c.reply()[0] == 220, "SMTP after the flood")
		c.close()


run_tests([test_metrics_hostile_labels,
    test_metrics_queue_trouble,
    test_reload_garbage_passwd_mid_exchanges,
    test_auth_killed_many_exchanges,
    test_budget_follows_reload,
    test_check_control_socket_dir,
    test_last_atrn_every_domain,
    test_reload_at_budget,
    test_broken_passwd_without_odmr,
    test_metrics_listener_out_of_descriptors], "review2")
