#!/usr/bin/env python3
"""AUTH on both ports: user names up to 255 octets, users without the
CRAM-MD5 verifier, failure limits shared by every session and both ports,
and the privilege-separated auth process (issues 14 and 17)."""

import base64
import hashlib
import hmac
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import Conn, check, fail, prog, run_tests
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


TESTS = [
	test_long_user_name,
	test_name_over_255_refused,
	test_no_cram_user,
]

if __name__ == "__main__":
	sys.exit(run_tests(TESTS, "AUTH: names, verifiers, limits, privsep"))
