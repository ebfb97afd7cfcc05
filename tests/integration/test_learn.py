#!/usr/bin/env python3
"""recipients = learn: deliveries by ATRN (fetchmail, odpull) into a local
server that refuses one address teach the relay; the next message to that
address is refused at RCPT, others are still accepted; a restart keeps
what was learned; odrelayctl recipients forget clears it."""

import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Skip, check, fail, fetchmail_argv, json_messages,
    prog, run_tests)
from pullsink import (PullFixture, Sink, add_user, run_prog, sample_message,
    submit, wait_queue)

DOMAINS = """
[domain example.org]
hold = yes
recipients = learn

[domain listed.example]
hold = yes
recipients = learn
recipients_file = %s
"""


def daemon(name):
	d = PullFixture(name, domains="", start=False)
	lst = os.path.join(d.d.dir, "listed.txt")
	with open(lst, "w") as f:
		f.write("boss@listed.example\n")
	os.chmod(lst, 0o644)
	d.d.text += DOMAINS % lst
	with open(d.d.conf, "w") as f:
		f.write(d.d.text)
	return d


def up(d):
	add_user(d, "demo", "demo", "example.org", "listed.example")
	d.start()


def refusing_sink():
	"""The customer's server: gone@ and boss@ do not exist, old@ refused
	without an enhanced code, policy@ refused for another reason."""
	def rcpt(a):
		if a.startswith(("gone@", "boss@")):
			return "550 5.1.1 <%s>: no such user here" % a
		if a.startswith("old@"):
			return "550 unknown user"
		if a.startswith("policy@"):
			return "550 5.7.1 not from you"
		return "250 2.1.5 ok"
	return Sink(rcpt_reply=rcpt)


def rcpt_code(d, addr):
	c = Conn(d.smtp_port)
	try:
		c.greet_ehlo("client.test")
		c.expect(250, "MAIL FROM:<s@client.test>")
		code, text = c.cmd("RCPT TO:<%s>" % addr)
		c.cmd("QUIT")
		return code, text
	finally:
		c.close()


def known(d, domain):
	r = d.ctl_ok("recipients", "--json", domain)
	try:
		return {e["address"]: e for e in json.loads(r.out)}
	except (ValueError, KeyError, TypeError) as e:
		fail("recipients --json: %s\n%s" % (e, r.out[:2000]))


def wait_known(d, domain, addr, state):
	deadline = time.time() + 10
	k = {}
	while time.time() < deadline:
		k = known(d, domain)
		if addr in k and k[addr]["state"] == state:
			return k
		time.sleep(0.2)
	fail("%s never known %s: %r\n%s" % (addr, state, k,
	    "\n".join(d.log_text().splitlines()[-30:])))


def fetchmail(d, sink_port):
	if shutil.which("fetchmail") is None:
		raise Skip("fetchmail not installed")
	rc = os.path.join(d.dir, "fetchmailrc")
	with open(rc, "w") as f:
		f.write('poll 127.0.0.1 via 127.0.0.1 protocol ODMR port %d '
		    'user "demo" password "demo" fetchdomains example.org,'
		    'listed.example smtphost 127.0.0.1/%d\n' % (d.odmr_port,
		    sink_port))
	os.chmod(rc, 0o600)
	home = os.path.join(d.dir, "home")
	os.makedirs(home, exist_ok=True)
	return run_prog(fetchmail_argv(["fetchmail", "-f", rc, "--nosyslog", "-v",
	    "--nodetach", "--pidfile", os.path.join(d.dir, "fetchmail.pid")]),
	    env={"HOME": home, "FETCHMAILHOME": home}, timeout=40)


def odpull(d, sink_port):
	return run_prog([prog("odpull"), "--server", "127.0.0.1:%d" % d.odmr_port,
	    "--user", "demo", "--deliver", "127.0.0.1:%d" % sink_port,
	    "--tls", "none", "--timeout", "20", "--domain", "example.org",
	    "--domain", "listed.example"], env={"ODPULL_PASSWORD": "demo"},
	    timeout=40)


def learn_by(puller, name):
	with daemon(name) as d:
		up(d)
		submit(d.smtp_port, "s@client.test", ["ok@example.org",
		    "gone@example.org", "old@example.org", "policy@example.org"],
		    sample_message(name + "1"))
		submit(d.smtp_port, "s@client.test", ["boss@listed.example",
		    "x@listed.example"], sample_message(name + "2"))
		sink = refusing_sink()
		with sink:
			r = puller(d, sink.port)
		check(r.returncode == 0, "%s exit %d:\n%s\nsink:\n%s" % (name,
		    r.returncode, r.out[-3000:], sink.dump()))
		check(sorted(sink.delivered_rcpts()) == ["ok@example.org",
		    "policy@example.org", "x@listed.example"] or
		    sorted(sink.delivered_rcpts()) == ["ok@example.org",
		    "x@listed.example"], "delivered: %r" % sink.delivered_rcpts())
		k = wait_known(d, "example.org", "gone@example.org", "invalid")
		k = wait_known(d, "example.org", "old@example.org", "invalid")
		k = wait_known(d, "example.org", "ok@example.org", "valid")
		check("policy@example.org" not in k or
		    k["policy@example.org"]["state"] == "valid",
		    "a 5.7.1 refusal was learned as no such user: %r" % k)
		now = time.time()
		e = k["gone@example.org"]
		check(e["source"] == "learned" and
		    abs(e["expires"] - (now + 30 * 86400)) < 120,
		    "invalid entry: %r (expected learned, 30 days)" % e)
		e = k["ok@example.org"]
		check(abs(e["expires"] - (now + 180 * 86400)) < 120,
		    "valid entry: %r (expected 180 days)" % e)

		code, text = rcpt_code(d, "gone@example.org")
		check(code == 550 and "5.1.1" in text, "RCPT to a learned-invalid "
		    "address: %s %r" % (code, text))
		code, text = rcpt_code(d, "GONE@example.org")
		check(code == 550, "case variant accepted: %s %r" % (code, text))
		for a in ("ok@example.org", "new@example.org", "policy@example.org",
		    "boss@listed.example"):
			code, text = rcpt_code(d, a)
			check(code == 250, "RCPT %s: %s %r" % (a, code, text))
		# The file wins over what was learned; the listing shows both.
		k2 = known(d, "listed.example")
		check(k2.get("boss@listed.example", {}).get("source") == "list",
		    "listed address not shown as list: %r" % k2)

		# A restart keeps it.
		d.stop()
		d.start()
		code, text = rcpt_code(d, "gone@example.org")
		check(code == 550, "after restart: %s %r" % (code, text))
		r = d.ctl_ok("recipients", "example.org")
		check("gone@example.org" in r.out and "invalid" in r.out,
		    "recipients listing: %r" % r.out)

		# forget one address, then the whole domain.
		d.ctl_ok("recipients", "forget", "example.org", "gone@example.org")
		code, text = rcpt_code(d, "gone@example.org")
		check(code == 250, "after forget: %s %r" % (code, text))
		code, text = rcpt_code(d, "old@example.org")
		check(code == 550, "forget took another address: %s %r"
		    % (code, text))
		d.ctl_ok("recipients", "forget", "example.org")
		check(known(d, "example.org") == {}, "forget DOMAIN left %r"
		    % known(d, "example.org"))
		code, text = rcpt_code(d, "old@example.org")
		check(code == 250, "after forget DOMAIN: %s %r" % (code, text))
		r = d.ctl("recipients", "forget", "nowhere.example")
		check(r.returncode != 0, "forget of an unknown domain succeeded")


def test_learn_fetchmail():
	learn_by(fetchmail, "learn-fm")


def test_learn_odpull():
	learn_by(odpull, "learn-odpull")


def test_learn_etrn():
	"""An ETRN delivery (the relay connects to the customer's route)
	teaches as well."""
	sink = refusing_sink()
	with sink:
		fx = PullFixture("learn-etrn", domains="", start=False)
		fx.d.text += ("\n[domain etrn.example]\nhold = yes\nroute = "
		    "[127.0.0.1]:%d\nrecipients = learn\n" % sink.port)
		with open(fx.d.conf, "w") as f:
			f.write(fx.d.text)
		with fx as d:
			d.start()
			submit(d.smtp_port, "s@client.test", ["ok@etrn.example",
			    "gone@etrn.example"], sample_message("etrn"))
			c = Conn(d.smtp_port)
			try:
				c.greet_ehlo("client.test")
				code, text = c.cmd("ETRN etrn.example")
				check(code in (250, 251, 252, 253), "ETRN: %s %r"
				    % (code, text))
				c.cmd("QUIT")
			finally:
				c.close()
			wait_known(d, "etrn.example", "gone@etrn.example", "invalid")
			wait_known(d, "etrn.example", "ok@etrn.example", "valid")
			code, text = rcpt_code(d, "gone@etrn.example")
			check(code == 550, "after ETRN: %s %r" % (code, text))
			code, text = rcpt_code(d, "ok@etrn.example")
			check(code == 250, "after ETRN: %s %r" % (code, text))


def test_forget_offline():
	"""With the daemon stopped, forget writes the cache itself."""
	with daemon("learn-offline") as d:
		up(d)
		submit(d.smtp_port, "s@client.test", ["gone@example.org",
		    "ok@example.org"], sample_message("off"))
		sink = refusing_sink()
		with sink:
			r = odpull(d, sink.port)
		check(r.returncode == 0, "odpull: %s" % r.out[-2000:])
		wait_known(d, "example.org", "gone@example.org", "invalid")
		d.stop()
		d.ctl_ok("recipients", "forget", "example.org", "gone@example.org")
		k = known(d, "example.org")
		check("gone@example.org" not in k and "ok@example.org" in k,
		    "offline forget: %r" % k)
		d.start()


def test_usage():
	with daemon("learn-usage") as d:
		up(d)
		for args in (["recipients"], ["recipients", "--json"],
		    ["recipients", "forget"], ["recipients", "a", "b"]):
			r = d.ctl(*args)
			check(r.returncode == 2, "odrelayctl %s: exit %d" % (
			    " ".join(args), r.returncode))
		r = d.ctl_ok("recipients", "--json", "example.org")
		check(json.loads(r.out) == [], "empty listing: %r" % r.out)


if __name__ == "__main__":
	run_tests([test_learn_fetchmail, test_learn_odpull, test_learn_etrn,
	    test_forget_offline,
	    test_usage], "recipients = learn")
