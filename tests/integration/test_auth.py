#!/usr/bin/env python3
"""AUTH on both ports: user names up to 255 octets, users without the
CRAM-MD5 verifier, failure limits shared by every session and both ports,
and the privilege-separated auth process (issues 14 and 17)."""

import base64
import hashlib
import hmac
import os
import pwd
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import Conn, Skip, check, fail, prog, run_tests
from pullsink import (PullFixture, Sink, add_user, cram_response, odmr_login,
    run_prog, sample_message, submit, wait_queue)

DOMAINS = """
[domain example.org]
hold = yes

[domain other.example]
hold = yes

[domain long.example]
hold = yes
"""


def daemon(name, extra="", tls=False):
	return PullFixture(name, extra=extra, domains=DOMAINS, tls=tls,
	    start=False)


def b64(s):
	if isinstance(s, str):
		s = s.encode()
	return base64.b64encode(s).decode()


def auth_plain(c, user, password):
	return c.cmd("AUTH PLAIN " + b64(b"\0" + user.encode() + b"\0" +
	    password.encode()))


def auth_cram(c, user, password):
	code, text = c.cmd("AUTH CRAM-MD5")
	if code != 334:
		return code, text
	return c.cmd(cram_response(user, password, text[4:]))


def auth_scram(c, user, password):
	"""SCRAM-SHA-256 (RFC 5802/7677) by hand; (code, text) of the end."""
	cnonce = b64(os.urandom(18))
	bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"),
	    cnonce)
	code, text = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,," + bare))
	if code != 334:
		return code, text
	first = base64.b64decode(text[4:]).decode()
	attrs = dict(a.split("=", 1) for a in first.split(","))
	salted = hashlib.pbkdf2_hmac("sha256", password.encode(),
	    base64.b64decode(attrs["s"]), int(attrs["i"]))
	ckey = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
	stored = hashlib.sha256(ckey).digest()
	final = "c=biws,r=" + attrs["r"]
	am = ",".join((bare, first, final)).encode()
	sig = hmac.new(stored, am, hashlib.sha256).digest()
	proof = bytes(a ^ b for a, b in zip(ckey, sig))
	code, text = c.cmd(b64(final + ",p=" + b64(proof)))
	if code != 334:
		return code, text
	skey = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
	want = "v=" + b64(hmac.new(skey, am, hashlib.sha256).digest())
	check(base64.b64decode(text[4:]).decode() == want,
	    "SCRAM server signature wrong: %r" % text)
	return c.cmd("")


def odmr_conn(d):
	c = Conn(d.odmr_port)
	c.greet_ehlo("customer.test")
	return c


# --- 17.5: long user names -------------------------------------------------

LONG = "u" * 127 + "x" * 73		# 200 octets
PREFIX = LONG[:127]


def test_long_user_name():
	"""A 200-octet user pulls its own domain, never the mail of the user
	named by its first 127 octets."""
	with daemon("auth-long") as d, Sink() as sink:
		add_user(d, LONG, "long-secret", "long.example")
		add_user(d, PREFIX, "prefix-secret", "other.example")
		d.start()
		submit(d.smtp_port, "s@client.test", ["x@other.example"],
		    sample_message("prefix"))
		for auth in (auth_cram, auth_scram):
			c = odmr_conn(d)
			code, text = auth(c, LONG, "long-secret")
			check(code == 235, "%s as the 200-octet user: %s %r\n%s"
			    % (auth.__name__, code, text, c.dump()))
			code, text = c.cmd("ATRN long.example")
			check(code == 453, "ATRN of its own domain: %s %r (want 453 "
			    "no mail)" % (code, text))
			code, text = c.cmd("ATRN")
			check(code == 453, "ATRN (all its domains): %s %r; the "
			    "mail of the 127-octet user must not be offered"
			    % (code, text))
			code, text = c.cmd("ATRN other.example")
			check(code == 450, "ATRN of the 127-octet user's domain: "
			    "%s %r" % (code, text))
			c.close()
		check(len(sink.delivered()) == 0, "mail delivered to the wrong "
		    "user:\n" + sink.dump())


def test_name_over_255_refused():
	with daemon("auth-256") as d:
		add_user(d, "demo", "demo", "example.org")
		r = d.ctl("passwd", "add", "n" * 256, "example.org",
		    input=b"secret\n")
		check(r.returncode == 2, "passwd add of a 256-octet name: exit %d "
		    "%s%s" % (r.returncode, r.out, r.err))
		check("255" in r.err, "no reason given: %r" % r.err)
		r = d.ctl("passwd", "add", "n" * 255, "example.org",
		    input=b"secret\n")
		check(r.returncode == 0, "passwd add of a 255-octet name: exit %d "
		    "%s" % (r.returncode, r.err))
		d.start()
		c = odmr_conn(d)
		code, text = auth_cram(c, "n" * 256, "secret")
		check(code == 535, "CRAM-MD5 with a 256-octet name: %s %r"
		    % (code, text))
		c.close()
		c = odmr_conn(d)
		code, text = auth_cram(c, "n" * 255, "secret")
		check(code == 235, "CRAM-MD5 with a 255-octet name: %s %r"
		    % (code, text))
		c.close()


# --- 17.14: users without the CRAM-MD5 verifier ----------------------------

def test_no_cram_user():
	with daemon("auth-nocram") as d, Sink() as sink:
		r = d.ctl("passwd", "add", "--no-cram", "nocram", "example.org",
		    input=b"nc-secret\n")
		check(r.returncode == 0, "passwd add --no-cram: exit %d %s"
		    % (r.returncode, r.err))
		with open(d.passwd) as f:
			line = [l for l in f if l.startswith("nocram:")][0]
		check("}cram=" not in line and ";cram=" not in line, "CRAM-MD5 verifier stored: %r" % line)
		r = d.ctl_ok("passwd", "list")
		check("CRAM-MD5" not in r.out and "SCRAM-SHA-256" in r.out,
		    "passwd list: %r" % r.out)
		d.start()
		c = odmr_conn(d)
		code, text = auth_cram(c, "nocram", "nc-secret")
		check(code == 535, "CRAM-MD5 for a --no-cram user: %s %r"
		    % (code, text))
		c.close()
		c = odmr_conn(d)
		code, text = auth_scram(c, "nocram", "nc-secret")
		check(code == 235, "SCRAM-SHA-256 for a --no-cram user: %s %r"
		    % (code, text))
		c.close()
		# odpull picks SCRAM-SHA-256 and pulls.
		submit(d.smtp_port, "s@client.test", ["a@example.org"],
		    sample_message("nocram"))
		r = run_prog([prog("odpull"), "--server", "127.0.0.1:%d"
		    % d.odmr_port, "--user", "nocram", "--deliver",
		    "127.0.0.1:%d" % sink.port, "--tls", "none", "--timeout", "20",
		    "--domain", "example.org"], env={"ODPULL_PASSWORD": "nc-secret"})
		check(r.returncode == 0, "odpull as the --no-cram user: exit %d\n%s"
		    % (r.returncode, r.out[-2000:]))
		check(len(sink.delivered()) == 1, "sink: %s" % sink.dump())


# --- helpers for the limits and the process split --------------------------

NO_DELAY = "auth_delay_max = 0\n"


def conn_from(port, src="127.0.0.1", timeout=10.0):
	c = Conn.__new__(Conn)
	c.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
	c.s.settimeout(timeout)
	c.s.bind((src, 0))
	c.s.connect(("127.0.0.1", port))
	c.buf = b""
	c.transcript = []
	return c


def starttls(c):
	c.expect(220, "STARTTLS")
	ctx = ssl.create_default_context()
	ctx.check_hostname = False
	ctx.verify_mode = ssl.CERT_NONE
	c.s = ctx.wrap_socket(c.s)
	c.expect(250, "EHLO customer.test")


def try_auth(port, user, password, src="127.0.0.1", smtp=False,
    auth=None):
	"""One AUTH on a fresh connection: the final reply code."""
	c = conn_from(port, src, timeout=30)
	try:
		c.greet_ehlo("customer.test")
		if smtp:
			starttls(c)
		code, _ = (auth or auth_cram)(c, user, password)
		return code
	finally:
		c.close()


def two_users(d):
	add_user(d, "alice", "alice-pw", "example.org")
	add_user(d, "bob", "bob-pw", "other.example")


# --- 17.4: failure limits --------------------------------------------------

def test_alternating_logins_limited():
	"""Alice's own logins between guesses at bob's password clear nothing:
	the eleventh guess is refused, bob's right password too."""
	with daemon("auth-alt", extra=NO_DELAY) as d:
		two_users(d)
		d.start()
		codes = []
		for i in range(14):
			check(try_auth(d.odmr_port, "alice", "alice-pw") in (235, 454),
			    "alice's own login")
			codes.append(try_auth(d.odmr_port, "bob", "guess%d" % i))
		check(codes[:10] == [535] * 10, "first 10 guesses: %r" % codes)
		check(all(c == 454 for c in codes[10:]), "guesses after the "
		    "limit were answered: %r" % codes)
		code = try_auth(d.odmr_port, "bob", "bob-pw")
		check(code == 454, "bob's right password from the guessing "
		    "address: %s" % code)
		# From a new address bob's password is not even checked.
		code = try_auth(d.odmr_port, "bob", "bob-pw", src="127.0.0.5")
		check(code == 535, "bob's right password from a new address: %s"
		    % code)
		check(d.log_text().count("password not checked") >= 1,
		    "no 'password not checked' line in the log")


def test_parallel_flood_limited():
	"""Forty sessions from eight addresses guess at once: at most ten
	passwords are ever checked, and the right one is not accepted."""
	with daemon("auth-flood", extra=NO_DELAY) as d:
		two_users(d)
		d.start()
		res = []
		lock = threading.Lock()

		def guess(i):
			# The right password sits among the guesses.
			pw = "bob-pw" if i in (25, 33, 39) else "guess%d" % i
			try:
				code = try_auth(d.odmr_port, "bob", pw,
				    src="127.0.1.%d" % (i % 8 + 1))
			except Exception as e:
				code = repr(e)
			with lock:
				res.append((i, code))
		ts = [threading.Thread(target=guess, args=(i,)) for i in range(40)]
		for t in ts:
			t.start()
		for t in ts:
			t.join(60)
		codes = [c for _, c in res]
		check(len(codes) == 40 and all(c in (535, 454) for c in codes),
		    "flood replies: %r" % sorted(res))
		log = d.log_text()
		failed = len(re.findall(r"auth: client=\[[^]]*\], user=.*, "
		    r"auth=failed", log))
		checked = failed - log.count("password not checked")
		check(failed >= 10, "only %d failures logged" % failed)
		check(checked <= 10, "%d wrong passwords were checked (limit 10)"
		    % checked)


def test_blocked_on_366_is_blocked_on_25():
	with daemon("auth-ports", extra=NO_DELAY, tls=True) as d:
		two_users(d)
		d.start()
		for i in range(10):
			code = try_auth(d.odmr_port, "bob", "guess%d" % i)
			check(code == 535, "guess %d on the ODMR port: %s" % (i, code))
		code = try_auth(d.smtp_port, "alice", "alice-pw", smtp=True)
		check(code == 454, "AUTH on port 25 after 10 failures on the ODMR "
		    "port: %s (want 454)" % code)
		code = try_auth(d.smtp_port, "bob", "bob-pw", smtp=True,
		    src="127.0.0.9")
		check(code == 535, "bob on port 25 from a new address: %s" % code)


# --- issue 14: every AUTH path through the auth process -----------------------

def auth_login(c, user, password):
	code, text = c.cmd("AUTH LOGIN")
	if code != 334:
		return code, text
	code, text = c.cmd(b64(user))
	if code != 334:
		return code, text
	return c.cmd(b64(password))


def test_every_mechanism_both_ports():
	with daemon("auth-mechs", tls=True) as d:
		two_users(d)
		d.start()
		mechs = (auth_cram, auth_scram, auth_plain, auth_login)
		for m in mechs:
			code = try_auth(d.smtp_port, "alice", "alice-pw", smtp=True,
			    auth=m)
			check(code == 235, "SMTP AUTH %s: %s" % (m.__name__, code))
			code = try_auth(d.odmr_port, "alice", "alice-pw", auth=m) \
			    if m in (auth_cram, auth_scram) else None
			if code is not None:
				check(code == 235, "ODMR AUTH %s: %s" % (m.__name__,
				    code))
			c = conn_from(d.odmr_port)
			c.greet_ehlo("customer.test")
			starttls(c)
			code, text = m(c, "alice", "alice-pw")
			check(code == 235, "ODMR AUTH %s inside TLS: %s %r"
			    % (m.__name__, code, text))
			code, text = c.cmd("ATRN example.org")
			check(code == 453, "ATRN after %s: %s %r" % (m.__name__,
			    code, text))
			c.close()
		# Plaintext mechanisms stay refused outside TLS.
		c = conn_from(d.odmr_port)
		c.greet_ehlo("customer.test")
		code, text = auth_plain(c, "alice", "alice-pw")
		check(code == 538, "PLAIN outside TLS: %s %r" % (code, text))
		c.close()


# --- issue 14: the process split ---------------------------------------------

def children(pid):
	out = []
	for e in os.listdir("/proc"):
		if not e.isdigit():
			continue
		try:
			with open("/proc/%s/stat" % e) as f:
				st = f.read()
		except OSError:
			continue
		rest = st[st.rindex(")") + 2:].split()
		if int(rest[1]) == pid:
			out.append((int(e), st[st.index("(") + 1:st.rindex(")")]))
	return out


def auth_pid(d, bound=10.0):
	"""The auth process under d: odrelayd -> odrelayd-priv -> -auth."""
	deadline = time.time() + bound
	while time.time() < deadline:
		for pid, comm in children(d.proc.pid):
			if comm == "odrelayd-priv":
				for apid, acomm in children(pid):
					if acomm == "odrelayd-auth":
						return apid
		time.sleep(0.1)
	fail("no odrelayd-auth process under %d: %r" % (d.proc.pid,
	    children(d.proc.pid)))


def status(pid):
	with open("/proc/%d/status" % pid) as f:
		return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)


def root_only(d):
	os.chown(d.passwd, 0, 0)
	os.chmod(d.passwd, 0o600)


def test_session_process_cannot_read_passwd():
	if os.geteuid() != 0:
		raise Skip("needs root (run_as_user nobody)")
	with daemon("auth-split") as d:
		two_users(d)
		root_only(d)
		d.start()
		nobody = pwd.getpwnam("nobody")
		st = status(d.proc.pid)
		check(st["Uid"].split()[0] == str(nobody.pw_uid),
		    "session process runs as uid %s" % st["Uid"])
		check(st.get("NoNewPrivs") == "1", "session NoNewPrivs: %r"
		    % st.get("NoNewPrivs"))
		check(st.get("Seccomp") == "2", "session Seccomp: %r"
		    % st.get("Seccomp"))
		check(int(st["CapEff"], 16) == 0, "session capabilities: %s"
		    % st["CapEff"])
		try:
			with open("/sys/kernel/security/lsm") as f:
				landlock = "landlock" in f.read()
		except OSError:
			landlock = False
		if landlock:
			check("Landlock" not in d.log_text(), "Landlock not applied:\n"
			    + d.log_text()[-1500:])
		# AUTH works (the auth process read the file) ...
		check(try_auth(d.odmr_port, "alice", "alice-pw") == 235, "AUTH")
		# ... and no descriptor of the session process is the file.
		real = os.path.realpath(d.passwd)
		for fd in os.listdir("/proc/%d/fd" % d.proc.pid):
			try:
				target = os.readlink("/proc/%d/fd/%s" % (d.proc.pid, fd))
			except OSError:
				continue
			check(not target.startswith(real), "session process has fd "
			    "%s on %s" % (fd, target))
		# Its user cannot open the file.
		r = subprocess.run(["/bin/cat", d.passwd],
		    preexec_fn=lambda: (os.setgroups([]),
		    os.setgid(nobody.pw_gid), os.setuid(nobody.pw_uid)),
		    stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
		check(r.returncode != 0 and b"Permission denied" in r.stderr,
		    "run_as_user could read the password file: %r" % r.stderr)
		# The auth process: root, no capability but reading, no
		# network.
		apid = auth_pid(d)
		ast = status(apid)
		check(ast["Uid"].split()[0] == "0", "auth process uid %s"
		    % ast["Uid"])
		check(int(ast["CapEff"], 16) == 1 << 2, "auth process "
		    "capabilities %s (want CAP_DAC_READ_SEARCH only)" % ast["CapEff"])
		check(ast.get("NoNewPrivs") == "1" and ast.get("Seccomp") == "2",
		    "auth process NoNewPrivs %r Seccomp %r" % (ast.get("NoNewPrivs"),
		    ast.get("Seccomp")))
		# SIGHUP after the drop: a user added as root (root-only file)
		# can log in.
		add_user(d, "carol", "carol-pw", "example.org")
		st = os.stat(d.passwd)
		check((st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o600),
		    "passwd add changed owner or mode: %d:%d %o" % (st.st_uid,
		    st.st_gid, st.st_mode & 0o777))
		d.proc.send_signal(signal.SIGHUP)
		deadline = time.time() + 10
		while "password file %s loaded" % d.passwd not in d.log_text():
			check(time.time() < deadline, "no reload logged")
			time.sleep(0.1)
		check(try_auth(d.odmr_port, "carol", "carol-pw") == 235,
		    "new user after SIGHUP")


def test_auth_process_killed():
	"""SIGKILL of the auth process: the exchange in flight gets 454, AUTH
	gets 454 until it is back, then works again; sessions go on."""
	with daemon("auth-kill") as d:
		two_users(d)
		d.start()
		apid = auth_pid(d)
		c = conn_from(d.odmr_port)
		c.greet_ehlo("customer.test")
		chal = c.expect(334, "AUTH CRAM-MD5")[4:]
		os.kill(apid, signal.SIGKILL)
		code, text = c.cmd(cram_response("alice", "alice-pw", chal))
		check(code == 454 and "4.7.0" in text, "exchange across the kill: "
		    "%s %r" % (code, text))
		# The session is still usable.
		code, text = c.cmd("NOOP")
		check(code == 250, "NOOP after 454: %s" % code)
		c.close()
		deadline = time.time() + 20
		codes = []
		while True:
			code = try_auth(d.odmr_port, "alice", "alice-pw")
			codes.append(code)
			if code == 235:
				break
			check(code == 454, "AUTH while the auth process restarts: "
			    "%s" % code)
			check(time.time() < deadline, "AUTH did not recover: %r"
			    % codes)
			time.sleep(0.2)
		check(auth_pid(d) != apid, "same auth process")
		check("killed by signal 9" in d.log_text(), "death not logged")


# --- 17.9: file layout, reload after the drop --------------------------------

def test_passwd_file_layout():
	if os.geteuid() != 0:
		raise Skip("needs root")
	with daemon("auth-layout") as d:
		os.unlink(d.passwd)
		add_user(d, "alice", "alice-pw", "example.org")
		st = os.stat(d.passwd)
		check((st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o600),
		    "new file: %d:%d %o (want root:root 600)" % (st.st_uid,
		    st.st_gid, st.st_mode & 0o777))
		r = run_prog([prog("odrelayd"), "-n", "-c", d.conf])
		check(r.returncode == 0 and "warning" not in r.out,
		    "odrelayd -n on root:root 0600: exit %d %s" % (r.returncode,
		    r.out))
		# An administrator's group and mode survive a rewrite.
		nobody = pwd.getpwnam("nobody")
		os.chown(d.passwd, 0, nobody.pw_gid)
		os.chmod(d.passwd, 0o640)
		add_user(d, "bob", "bob-pw", "other.example")
		st = os.stat(d.passwd)
		check((st.st_uid, st.st_gid, st.st_mode & 0o777) ==
		    (0, nobody.pw_gid, 0o640), "rewrite changed the file: %d:%d %o"
		    % (st.st_uid, st.st_gid, st.st_mode & 0o777))
		r = run_prog([prog("odrelayd"), "-n", "-c", d.conf])
		check(r.returncode == 0 and "readable by run_as_user" in r.out,
		    "odrelayd -n on a file run_as_user can read: exit %d %s"
		    % (r.returncode, r.out))
		os.chmod(d.passwd, 0o644)
		r = run_prog([prog("odrelayd"), "-n", "-c", d.conf])
		check(r.returncode == 2 and "every user" in r.out,
		    "odrelayd -n on a world-readable file: exit %d %s"
		    % (r.returncode, r.out))
		os.chmod(d.passwd, 0o600)
		os.chown(d.passwd, 0, 0)
		d.start()
		check(try_auth(d.odmr_port, "bob", "bob-pw") == 235, "AUTH")


def test_reload_root_only_tls_key():
	"""SIGHUP after the drop with a root-only key (and password file):
	the helper opens the TLS files; STARTTLS and AUTH work after."""
	if os.geteuid() != 0:
		raise Skip("needs root (run_as_user nobody)")
	with daemon("auth-tlsreload", tls=True) as d:
		two_users(d)
		root_only(d)
		for f in (d.cert, d.key):
			os.chown(f, 0, 0)
			os.chmod(f, 0o600)
		d.start()
		d.proc.send_signal(signal.SIGHUP)
		deadline = time.time() + 10
		while "reload: configuration" not in d.log_text():
			check("keeping the old configuration" not in d.log_text(),
			    "reload refused:\n" + d.log_text()[-2000:])
			check(time.time() < deadline, "no reload logged")
			time.sleep(0.1)
		check(try_auth(d.smtp_port, "alice", "alice-pw", smtp=True,
		    auth=auth_plain) == 235, "STARTTLS + AUTH after the reload")


TESTS = [
	test_long_user_name,
	test_name_over_255_refused,
	test_no_cram_user,
	test_alternating_logins_limited,
	test_parallel_flood_limited,
	test_blocked_on_366_is_blocked_on_25,
	test_every_mechanism_both_ports,
	test_session_process_cannot_read_passwd,
	test_auth_process_killed,
	test_passwd_file_layout,
	test_reload_root_only_tls_key,
]

if __name__ == "__main__":
	sys.exit(run_tests(TESTS, "AUTH: names, verifiers, limits, privsep"))
