#!/usr/bin/env python3
"""The operator's view (issue 18): odrelayd -n checks what the daemon
loads, every listener is logged, metrics without ODMR, --help everywhere,
relative paths from the configuration file's directory."""

import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Daemon, Fixture, check, fail, free_port, make_cert, prog,
    run, run_tests, send_message)


def check_n(conf, want_rc, pattern, what):
	r = run([prog("odrelayd"), "-n", "-c", conf])
	check(r.returncode == want_rc, "%s: odrelayd -n exit %d (want %d):\n%s"
	    % (what, r.returncode, want_rc, r.out))
	check(re.search(pattern, r.out), "%s: -n output lacks %r:\n%s"
	    % (what, pattern, r.out))
	return r


def write_conf(d, text):
	path = os.path.join(d.dir, "check.conf")
	with open(path, "w") as f:
		f.write(text)
	return path


def test_check_only():
	"""odrelayd -n: one line on success; missing, unreadable or
	mismatched TLS files, a queue directory without a parent, a control
	socket directory that does not exist: errors with strerror, exit 2."""
	d = Daemon("ops-n", tls=True)
	try:
		check_n(d.conf, 0, r"configuration OK", "valid")
		# One line on standard output (warnings go to standard error).
		r = subprocess.run([prog("odrelayd"), "-n", "-c", d.conf],
		    stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
		out = r.stdout.decode(errors="replace")
		check(r.returncode == 0 and len(out.splitlines()) == 1 and
		    "configuration OK" in out, "-n on success: exit %d, stdout %r"
		    % (r.returncode, out))
		base = d.text
		# A one-word hostname is only a warning (and says what to do).
		c = write_conf(d, base.replace("hostname = relay.test",
		    "hostname = relay"))
		check_n(c, 0, r"warning: hostname 'relay' is not fully qualified.*"
		    r"set hostname", "one-word hostname")
		missing = os.path.join(d.dir, "nonexistent.pem")
		c = write_conf(d, base.replace("tls_cert_file = " + d.cert,
		    "tls_cert_file = " + missing))
		check_n(c, 2, re.escape(missing) + r": No such file or directory",
		    "missing certificate")
		c = write_conf(d, base.replace("tls_key_file = " + d.key,
		    "tls_key_file = " + missing))
		check_n(c, 2, r"tls_key_file .*No such file or directory",
		    "missing key")
		# A key that belongs to another certificate.
		other = os.path.join(d.dir, "other")
		os.mkdir(other)
		_, okey = make_cert(other)
		c = write_conf(d, base.replace("tls_key_file = " + d.key,
		    "tls_key_file = " + okey))
		check_n(c, 2, r"does not match", "mismatched key")
		if os.geteuid() != 0:
			locked = os.path.join(d.dir, "locked.pem")
			shutil.copy(d.key, locked)
			os.chmod(locked, 0)
			c = write_conf(d, base.replace("tls_key_file = " + d.key,
			    "tls_key_file = " + locked))
			check_n(c, 2, r"Permission denied", "unreadable key")
		q = os.path.join(d.dir, "no", "such", "queue")
		c = write_conf(d, base.replace("queue_dir = " + d.queue_dir,
		    "queue_dir = " + q))
		check_n(c, 2, r"queue_dir: directory .*/no/such: No such file",
		    "queue without parent")
		c = write_conf(d, base.replace("control_socket = " + d.sock,
		    "control_socket = " + os.path.join(d.dir, "nodir", "c.sock")))
		check_n(c, 2, r"control_socket: directory .*nodir: No such file",
		    "control socket without directory")
		# A queue directory whose environment cannot be opened.
		bad = os.path.join(d.dir, "badqueue")
		os.mkdir(bad)
		with open(os.path.join(bad, "data.mdb"), "wb") as f:
			f.write(b"this is not an LMDB environment\n" * 512)
		c = write_conf(d, base.replace("queue_dir = " + d.queue_dir,
		    "queue_dir = " + bad))
		check_n(c, 2, r"queue_dir .*badqueue: ", "unreadable queue")
		# What -n refuses, the daemon refuses too, with the same words.
		c = write_conf(d, base.replace("tls_cert_file = " + d.cert,
		    "tls_cert_file = " + missing))
		r = run([prog("odrelayd"), "-f", "-c", c], timeout=20)
		check(r.returncode == 2 and "No such file or directory" in r.out,
		    "daemon with a missing certificate: exit %d\n%s"
		    % (r.returncode, r.out))
	finally:
		d.cleanup(keep=False)


def test_relative_paths():
	"""queue_dir, passwd_file, control_socket relative to the file's
	directory, whatever the daemon's working directory."""
	d = Daemon("ops-rel")
	try:
		text = (d.text.replace("queue_dir = " + d.queue_dir,
		    "queue_dir = spool")
		    .replace("control_socket = " + d.sock, "control_socket = ctl.sock")
		    .replace("passwd_file = " + d.passwd, "passwd_file = passwd"))
		with open(d.conf, "w") as f:
			f.write(text)
		d.sock = os.path.join(d.dir, "ctl.sock")
		d.text = text
		d.start()
		check(os.path.isdir(os.path.join(d.dir, "spool")),
		    "queue not made next to the configuration file")
		log = d.log_text()
		check(re.search(r"queue: created directory .*/spool", log),
		    "no log line for the queue directory created:\n" + log[-2000:])
		# odrelayctl from another directory finds the same socket.
		r = subprocess.run([prog("odrelayctl"), "-c", d.conf, "queue"],
		    cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
		    timeout=20)
		check(r.returncode == 0, "odrelayctl from /: exit %d\n%s"
		    % (r.returncode, r.stdout.decode(errors="replace")))
		check(d.stop() == 0, "daemon did not stop cleanly")
	finally:
		d.cleanup(keep=False)


def scrape(port):
	with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
	    timeout=10) as r:
		return r.read().decode()


def test_metrics_without_odmr():
	"""A pure backup MX (odmr_listen empty) still serves metrics, and
	every listener is logged as listening."""
	mport = free_port()
	d = Daemon("ops-nodmr2", extra="metrics_listen = 127.0.0.1:%d\n" % mport)
	try:
		text = re.sub(r"(?m)^odmr_listen = .*$", "odmr_listen =", d.text)
		with open(d.conf, "w") as f:
			f.write(text)
		d.text = text
		d.start()
		body = scrape(mport)
		check("odrelay_received_total" in body or "odrelay_" in body,
		    "no odrelay series at /metrics:\n" + body[:500])
		log = d.log_text()
		for what in ("smtpd: listening on 127.0.0.1:%d" % d.smtp_port,
		    "metrics: listening on 127.0.0.1:%d" % mport,
		    "control: listening on " + d.sock):
			check(log.count(what) == 1, "not one '%s' in the log:\n%s"
			    % (what, log[-2000:]))
		check("odmr: listening" not in log, "ODMR said listening while "
		    "disabled")
		check(d.stop() == 0, "daemon did not stop cleanly")
	finally:
		d.cleanup(keep=False)


def test_odmrs_without_odmr():
	"""odmrs_listen alone (odmr_listen empty) opens the TLS port."""
	d = Daemon("ops-odmrs", tls=True)
	port = free_port()
	try:
		text = re.sub(r"(?m)^odmr_listen = .*$", "odmr_listen =\n"
		    "odmrs_listen = 127.0.0.1:%d" % port, d.text)
		with open(d.conf, "w") as f:
			f.write(text)
		d.text = text
		d.start()
		log = d.log_text()
		check("odmr: listening on 127.0.0.1:%d (TLS)" % port in log,
		    "odmrs listener not logged:\n" + log[-2000:])
		r = run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
		    "-quiet", "-ign_eof"], input=b"QUIT\r\n", timeout=20)
		check(re.search(r"^220 ", r.out, re.M), "no 220 greeting over "
		    "TLS on the odmrs port:\n" + r.out)
		check(d.stop() == 0, "daemon did not stop cleanly")
	finally:
		d.cleanup(keep=False)


def test_help():
	"""--help on every program: usage on stdout, exit 0."""
	for p in ("odrelayd", "odrelayctl", "odpull"):
		r = subprocess.run([prog(p), "--help"], stdout=subprocess.PIPE,
		    stderr=subprocess.PIPE, timeout=10)
		out = r.stdout.decode(errors="replace")
		check(r.returncode == 0 and "usage" in out.lower(),
		    "%s --help: exit %d, stdout %r, stderr %r" % (p, r.returncode,
		    out, r.stderr.decode(errors="replace")))


def control_exchange(path, data):
	"""Send data on the control socket; what comes back until it closes."""
	c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
	c.settimeout(10)
	try:
		c.connect(path)
		c.sendall(data)
		got = b""
		while True:
			try:
				b = c.recv(4096)
			except ConnectionResetError:
				b = b""		# closed with input unread
			if not b:
				return got
			got += b
	finally:
		c.close()


def test_control_line_limit():
	"""The control socket reads through the servers' bounded line reader:
	a request line of 1,024 octets is read (an unknown verb's reply), one
	of 1,025 gets 500, with or without CR; input with no line end past the
	limit is dropped unanswered; the daemon keeps answering."""
	with Fixture("ops-ctlline") as d:
		sock = d.sock
		got = control_exchange(sock, b"x" * 1024 + b"\r\n")
		check(got.startswith(b"500 unknown command"), "1,024 octets: %r" % got[:80])
		for end in (b"\r\n", b"\n"):
			got = control_exchange(sock, b"x" * 1025 + end)
			check(got.startswith(b"500 line too long"), "1,025 octets: %r" % got[:80])
		got = control_exchange(sock, b"x" * 5000)
		check(got == b"", "no line end: %r" % got[:80])
		got = control_exchange(sock, b"ping\n")
		check(got.startswith(b"250 pong"), "ping afterwards: %r" % got)


if __name__ == "__main__":
	run_tests([
		test_check_only,
		test_relative_paths,
		test_metrics_without_odmr,
		test_odmrs_without_odmr,
		test_help,
		test_control_line_limit,
	], "ops")
