#!/usr/bin/env python3
"""ODMR: the ATRN listener (RFC 2645) with fetchmail and scripted customers."""

import os
import shutil
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Skip, check, fail, fetchmail_argv, free_port, json_find,
    json_messages, run_tests)
from pullsink import (PullFixture, Sink, add_user, cram_response, msg_rcpts,
    odmr_login, reverse_serve, run_prog, sample_message, submit, wait_queue)

DOMAINS = """
[domain example.org]
hold = yes

[domain other.example]
hold = yes
"""


def daemon(name, extra="", tls=False):
	return PullFixture(name, extra=extra, domains=DOMAINS, tls=tls, start=False)


def users(d):
	"""Write the password file, then start the daemon (it reads it then)."""
	add_user(d, "demo", "demo", "example.org")
	add_user(d, "other", "other-secret", "other.example")
	d.start()


def queue_empty(j):
	return not json_messages(j)


def pending(d, qid):
	"""Pending recipients of qid (None when the message is gone)."""
	m = json_find(d.queue_json(), qid)
	return None if m is None else msg_rcpts(m)


def dsns_for(j, addr):
	"""Queued messages with the null sender addressed to addr."""
	out = []
	for m in json_messages(j):
		if m.get("sender") in ("", "<>", None) and addr in msg_rcpts(m):
			out.append(m)
	return out


def check_delivered(sink, bodies, what):
	"""Every (qid -> stored bytes) arrived once, byte-identical."""
	got = [t for t, _ in sink.delivered()]
	check(len(got) == len(bodies), "%s: sink got %d messages, expected %d:\n"
	    "%r\nsink transcript:\n%s" % (what, len(got), len(bodies), got,
	    sink.dump()))
	want = sorted(bodies.values())
	have = sorted(t.data for t in got)
	for w, h in zip(want, have):
		if w != h:
			fail("%s: delivered text differs from the stored message "
			    "(%d vs %d octets)\nstored: %r\ngot:    %r" % (what, len(w),
			    len(h), w[:600], h[:600]))


def atrn_customer(d, domains="example.org", user="demo", password="demo"):
	"""Scripted customer up to the ATRN reply: (Conn, code, text)."""
	c, code, text = odmr_login(d.odmr_port, user, password)
	check(code == 235, "AUTH CRAM-MD5 %s: %s %r\n%s" % (user, code, text,
	    c.dump()))
	code, text = c.cmd("ATRN " + domains)
	return c, code, text


def reversed_session(d, sink, domains="example.org"):
	c, code, text = atrn_customer(d, domains)
	check(code == 250, "ATRN: %s %r" % (code, text))
	check("\n" not in text, "multi-line ATRN reply %r" % text)
	try:
		reverse_serve(c, sink)
	finally:
		c.close()


# --- fetchmail -------------------------------------------------------------

def fetchmail(d, sink_port, tmp, password="demo", domains="example.org",
    port=None, ssl_cert=None):
	if shutil.which("fetchmail") is None:
		raise Skip("fetchmail not installed")
	rc = os.path.join(tmp, "fetchmailrc")
	line = ('poll 127.0.0.1 via 127.0.0.1 protocol ODMR port %d '
	    'user "demo" password "%s" fetchdomains %s smtphost 127.0.0.1/%d'
	    % (port or d.odmr_port, password, domains, sink_port))
	if ssl_cert:
		line += (' ssl sslcertck sslcertfile "%s" sslcommonname localhost'
		    % ssl_cert)
	with open(rc, "w") as f:
		f.write(line + "\n")
	os.chmod(rc, 0o600)
	home = os.path.join(tmp, "home")
	os.makedirs(home, exist_ok=True)
	return run_prog(fetchmail_argv(["fetchmail", "-f", rc, "--nosyslog", "-v",
	    "--nodetach", "--pidfile", os.path.join(tmp, "fetchmail.pid")]),
	    env={"HOME": home, "FETCHMAILHOME": home}, timeout=40)


def test_fetchmail_pull():
	with daemon("odmr-fm") as d, Sink() as sink:
		users(d)
		q1 = submit(d.smtp_port, "s1@client.test", ["user@example.org"],
		    sample_message("fm1"), " BODY=8BITMIME")
		q2 = submit(d.smtp_port, "s2@client.test",
		    ["a@example.org", "b@example.org"], sample_message("fm2"),
		    " BODY=8BITMIME")
		bodies = {q: d.body(q) for q in (q1, q2)}
		r = fetchmail(d, sink.port, d.dir)
		check(r.returncode == 0, "fetchmail exit %d:\n%s\nsink:\n%s"
		    % (r.returncode, r.out, sink.dump()))
		check_delivered(sink, bodies, "fetchmail ODMR")
		check(sink.delivered_rcpts() == ["a@example.org", "b@example.org",
		    "user@example.org"], "recipients at the sink: %r"
		    % sink.delivered_rcpts())
		check(not any(c.upper().startswith(("STARTTLS", "BDAT"))
		    for c in sink.commands), "STARTTLS/BDAT in the reversed "
		    "session: %r" % sink.commands)
		check(any(c.upper() == "QUIT" for c in sink.commands),
		    "the provider never sent QUIT: %r" % sink.commands)
		wait_queue(d, queue_empty, "empty after the pull")


def test_fetchmail_no_mail():
	with daemon("odmr-fm0") as d, Sink() as sink:
		users(d)
		r = fetchmail(d, sink.port, d.dir)
		check(r.returncode == 0, "fetchmail with no mail: exit %d:\n%s"
		    % (r.returncode, r.out))
		check("no mail" in r.out.lower(), "fetchmail did not report "
		    "'no mail':\n" + r.out)
		check(not sink.txns, "sink got transactions: %r" % sink.txns)


def test_fetchmail_wrong_password():
	with daemon("odmr-fmbad") as d, Sink() as sink:
		users(d)
		q = submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("fmbad"))
		r = fetchmail(d, sink.port, d.dir, password="wrong")
		check(r.returncode != 0, "fetchmail with a wrong password exit 0:\n"
		    + r.out)
		check("535" in r.out, "no 535 in fetchmail's log:\n" + r.out)
		check(not sink.txns, "sink got transactions: %r" % sink.txns)
		check(pending(d, q) == ["user@example.org"],
		    "message not kept: %r" % pending(d, q))


def test_fetchmail_odmrs():
	# The sink binds first: an ephemeral port it took after free_port()
	# could be the one the daemon is about to bind.
	with Sink() as sink, daemon("odmr-fmtls", tls=True,
	    extra="odmrs_listen = 127.0.0.1:%d" % free_port()) as d:
		users(d)
		port = int(d.text.split("odmrs_listen = 127.0.0.1:")[1].split()[0])
		q1 = submit(d.smtp_port, "s1@client.test", ["user@example.org"],
		    sample_message("fmtls1"))
		q2 = submit(d.smtp_port, "s2@client.test", ["x@example.org"],
		    sample_message("fmtls2", b"last line\r\n.\r\n"))
		bodies = {q: d.body(q) for q in (q1, q2)}
		r = fetchmail(d, sink.port, d.dir, port=port, ssl_cert=d.cert)
		check(r.returncode == 0, "fetchmail --ssl exit %d:\n%s\nsink:\n%s"
		    % (r.returncode, r.out, sink.dump()))
		check_delivered(sink, bodies, "fetchmail over odmrs")
		wait_queue(d, queue_empty, "empty after the pull")


# --- protocol, scripted ----------------------------------------------------

def test_ehlo_and_auth_offer():
	with daemon("odmr-ehlo", tls=True) as d:
		d.start()
		c = Conn(d.odmr_port)
		t = c.greet_ehlo("customer.test")
		lines = [x[4:] for x in t.splitlines()]
		check(any(x.upper() == "ATRN" for x in lines), "no ATRN in EHLO:\n" + t)
		auth = [x for x in lines if x.upper().startswith("AUTH ")]
		check(auth, "no 'AUTH ' line in EHLO:\n" + t)
		mechs = auth[0].upper().split()[1:]
		check("CRAM-MD5" in mechs, "CRAM-MD5 not offered: %r" % auth)
		check("PLAIN" not in mechs and "LOGIN" not in mechs,
		    "PLAIN/LOGIN offered without TLS: %r" % auth)
		check("STARTTLS" in [x.upper() for x in lines], "no STARTTLS:\n" + t)
		check(all(len(x) >= 4 for x in t.splitlines()), "short EHLO line")
		code, text = c.cmd("AUTH PLAIN AGRlbW8AZGVtbw==")
		check(code is not None and 500 <= code < 600 and code != 535,
		    "AUTH PLAIN without TLS: %s %r" % (code, text))
		for verb in ("MAIL FROM:<a@b.test>", "ETRN example.org", "TURN"):
			c.expect(502, verb)
		c.expect(530, "ATRN example.org")
		c.expect(530, "ATRN")
		c.expect(221, "QUIT")
		c.close()


def test_wrong_password_and_slow_failures():
	with daemon("odmr-badpw") as d:
		users(d)
		q = submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("badpw"))
		c = Conn(d.odmr_port)
		c.greet_ehlo("customer.test")
		times = []
		for pw in ("wrong", "demo-also-wrong"):
			chal = c.expect(334, "AUTH CRAM-MD5")[4:]
			t0 = time.time()
			code, text = c.cmd(cram_response("demo", pw, chal))
			times.append(time.time() - t0)
			check(code == 535, "wrong password: %s %r" % (code, text))
		check(times[1] >= 1.0, "second AUTH failure answered after %.2f s "
		    "(want >= 1 s)" % times[1])
		# Unknown user: same answer.
		chal = c.expect(334, "AUTH CRAM-MD5")[4:]
		c.expect(535, cram_response("nosuchuser", "demo", chal))
		c.expect(530, "ATRN example.org")
		c.close()
		check(pending(d, q) == ["user@example.org"],
		    "message not kept: %r" % pending(d, q))


def test_unauthorized_domain():
	with daemon("odmr-authz") as d:
		users(d)
		q1 = submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("authz1"))
		q2 = submit(d.smtp_port, "s@client.test", ["bob@other.example"],
		    sample_message("authz2"))
		for req in ("other.example", "example.org,other.example",
		    "Other.Example"):
			c, code, text = atrn_customer(d, req)
			check(code == 450, "ATRN %s by demo: %s %r" % (req, code, text))
			check("other.example" not in text.lower(),
			    "450 text names the domain: %r" % text)
			# Nothing may follow: no reversal.
			extra = c.pending(0.5)
			check(extra == b"", "data after 450: %r" % extra)
			c.cmd("QUIT")
			c.close()
		check(pending(d, q1) == ["user@example.org"], "q1: %r" % pending(d, q1))
		check(pending(d, q2) == ["bob@other.example"], "q2: %r" % pending(d, q2))


def test_atrn_syntax_and_state():
	with daemon("odmr-state") as d:
		users(d)
		c = Conn(d.odmr_port)
		c.greet_ehlo("customer.test")
		c.expect(530, "ATRN example.org")
		c.expect(250, "NOOP")
		c.expect(250, "RSET")
		c2, code, text = odmr_login(d.odmr_port, conn=c)
		check(code == 235, "AUTH: %s %r" % (code, text))
		c.expect(503, "AUTH CRAM-MD5")
		for bad in ("ATRN a.org, b.org", "ATRN ,example.org",
		    "ATRN example.org,", "ATRN @example.org", "ATRN localhost"):
			c.expect(501, bad)
		c.expect(221, "QUIT")
		c.close()


def test_no_mail():
	with daemon("odmr-nomail") as d:
		users(d)
		c, code, text = atrn_customer(d, "example.org")
		check(code == 453, "ATRN with an empty queue: %s %r" % (code, text))
		c.expect(221, "QUIT")
		check(c.pending(2.0) == b"", "data after 221")
		c.close()
		# Bare ATRN (all the user's domains) as well.
		c, code, text = atrn_customer(d, "")
		check(code == 453, "bare ATRN with an empty queue: %s %r"
		    % (code, text))
		c.expect(221, "QUIT")
		c.close()


def test_starttls_plain():
	with daemon("odmr-starttls", tls=True) as d:
		users(d)
		q = submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("starttls"))
		body = d.body(q)
		c = Conn(d.odmr_port)
		c.greet_ehlo("customer.test")
		c.expect(220, "STARTTLS")
		ctx = ssl.create_default_context(cafile=d.cert)
		c.s = ctx.wrap_socket(c.s, server_hostname="localhost")
		t = c.expect(250, "EHLO customer.test")
		auth = [x[4:] for x in t.splitlines() if x[4:].upper().startswith("AUTH ")]
		check(auth and "PLAIN" in auth[0].upper().split(),
		    "PLAIN not offered inside TLS:\n" + t)
		check("STARTTLS" not in t.upper(), "STARTTLS offered again:\n" + t)
		c.expect(235, "AUTH PLAIN AGRlbW8AZGVtbw==")
		code, text = c.cmd("ATRN example.org")
		check(code == 250, "ATRN: %s %r" % (code, text))
		sink = Sink()
		try:
			reverse_serve(c, sink)
		finally:
			c.close()
		check_delivered(sink, {q: body}, "STARTTLS + PLAIN")
		wait_queue(d, queue_empty, "empty after the pull")


def test_odmrs_python_ssl():
	port = free_port()
	with daemon("odmr-odmrs", tls=True,
	    extra="odmrs_listen = 127.0.0.1:%d" % port) as d:
		users(d)
		q = submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("odmrs"))
		body = d.body(q)
		ctx = ssl.create_default_context(cafile=d.cert)
		raw = socket.create_connection(("127.0.0.1", port), timeout=10)
		c = Conn.__new__(Conn)
		c.s = ctx.wrap_socket(raw, server_hostname="localhost")
		c.buf = b""
		c.transcript = []
		t = c.greet_ehlo("customer.test")
		check("STARTTLS" not in t.upper(), "STARTTLS offered inside "
		    "implicit TLS:\n" + t)
		c.expect(235, "AUTH PLAIN AGRlbW8AZGVtbw==")
		code, text = c.cmd("ATRN example.org")
		check(code == 250, "ATRN: %s %r" % (code, text))
		sink = Sink()
		try:
			reverse_serve(c, sink)
		finally:
			c.close()
		check_delivered(sink, {q: body}, "odmrs")
		wait_queue(d, queue_empty, "empty after the pull")


def test_rcpt_550_dsn():
	with daemon("odmr-550") as d:
		users(d)
		q = submit(d.smtp_port, "sender@client.test",
		    ["good@example.org", "bad@example.org"], sample_message("r550"))
		body = d.body(q)
		sink = Sink(rcpt_reply=lambda a: "550 5.1.1 no such user"
		    if a.startswith("bad@") else "250 2.1.5 ok")
		reversed_session(d, sink)
		check_delivered(sink, {q: body}, "550 for one rcpt")
		check(sink.delivered_rcpts() == ["good@example.org"],
		    "delivered: %r" % sink.delivered_rcpts())
		j = wait_queue(d, lambda j: json_find(j, q) is None,
		    "message gone after 250 + 550")
		j = wait_queue(d, lambda j: dsns_for(j, "sender@client.test"),
		    "a DSN queued for sender@client.test")
		dsn = dsns_for(j, "sender@client.test")[0]
		text = d.body(dsn.get("id") or dsn.get("queue_id")).decode(
		    errors="replace")
		check("bad@example.org" in text and "5.1.1" in text,
		    "DSN lacks the failed recipient / status:\n" + text[:2000])
		check("good@example.org" not in text.split("\r\n\r\n", 1)[0],
		    "DSN header mentions the delivered recipient")


def test_rcpt_450_stays():
	with daemon("odmr-450") as d:
		users(d)
		q1 = submit(d.smtp_port, "s@client.test",
		    ["ok@example.org", "later@example.org"], sample_message("r450a"))
		q2 = submit(d.smtp_port, "s@client.test", ["all@example.org"],
		    sample_message("r450b"))
		sink = Sink(rcpt_reply=lambda a: "250 2.1.5 ok"
		    if a.startswith("ok@") else "450 4.2.0 mailbox busy")
		reversed_session(d, sink)
		check(sink.delivered_rcpts() == ["ok@example.org"],
		    "delivered: %r\n%s" % (sink.delivered_rcpts(), sink.dump()))
		wait_queue(d, lambda j: json_find(j, q1) is not None and
		    msg_rcpts(json_find(j, q1)) == ["later@example.org"],
		    "q1 keeps later@ only")
		check(pending(d, q2) == ["all@example.org"], "q2: %r" % pending(d, q2))
		check(not dsns_for(d.queue_json(), "s@client.test"),
		    "a DSN was made for a 450")


def test_data_451_stays():
	with daemon("odmr-d451") as d:
		users(d)
		q = submit(d.smtp_port, "s@client.test",
		    ["a@example.org", "b@example.org"], sample_message("d451"))
		sink = Sink(data_reply=lambda t: "451 4.3.0 try again later")
		reversed_session(d, sink)
		check(sink.txns and sink.txns[0].complete, "no message reached the "
		    "customer:\n" + sink.dump())
		time.sleep(0.5)
		check(pending(d, q) == ["a@example.org", "b@example.org"],
		    "after 451 to end-of-data: %r" % pending(d, q))


def test_drop_in_data():
	with daemon("odmr-drop") as d:
		users(d)
		q1 = submit(d.smtp_port, "s@client.test", ["a@example.org"],
		    sample_message("drop1"))
		q2 = submit(d.smtp_port, "s@client.test", ["b@example.org"],
		    sample_message("drop2"))
		sink = Sink(drop_in_data=True)
		reversed_session(d, sink)
		check(sink.txns, "no transaction began:\n" + sink.dump())
		time.sleep(1.0)
		check(pending(d, q1) == ["a@example.org"], "q1: %r" % pending(d, q1))
		check(pending(d, q2) == ["b@example.org"], "q2: %r" % pending(d, q2))
		# And the mail can still be pulled afterwards.
		sink2 = Sink()
		reversed_session(d, sink2)
		check(sink2.delivered_rcpts() == ["a@example.org", "b@example.org"],
		    "second pull: %r\n%s" % (sink2.delivered_rcpts(), sink2.dump()))
		wait_queue(d, queue_empty, "empty after the second pull")


def test_greeting_421():
	with daemon("odmr-421") as d:
		users(d)
		q = submit(d.smtp_port, "s@client.test", ["a@example.org"],
		    sample_message("g421"))
		sink = Sink(greeting="421 4.3.2 customer not ready")
		reversed_session(d, sink)
		check(not sink.txns and not any(c.upper().startswith(("MAIL", "EHLO",
		    "HELO")) for c in sink.commands), "provider went on after "
		    "421:\n" + sink.dump())
		check(sink.commands == ["QUIT"], "a 421 greeting is a refusal: "
		    "QUIT, then the close (protocol-notes):\n" + sink.dump())
		time.sleep(0.5)
		check(pending(d, q) == ["a@example.org"], "q: %r" % pending(d, q))


def test_cross_customer():
	with daemon("odmr-cross") as d:
		users(d)
		q = submit(d.smtp_port, "s@client.test",
		    ["mine@example.org", "theirs@other.example", "mine2@example.org"],
		    sample_message("cross"))
		sink = Sink()
		reversed_session(d, sink)
		rc = [a for t in sink.txns for a in t.rcpts]
		check(sorted(rc) == ["mine2@example.org", "mine@example.org"],
		    "RCPTs in demo's session: %r" % rc)
		check(not any("other.example" in c.lower() for c in sink.commands),
		    "other customer's address in the session: %r" % sink.commands)
		wait_queue(d, lambda j: json_find(j, q) is not None and
		    msg_rcpts(json_find(j, q)) == ["theirs@other.example"],
		    "only theirs@other.example left")
		# The other customer gets exactly its own recipient.
		c, code, text = atrn_customer(d, "other.example", "other",
		    "other-secret")
		check(code == 250, "ATRN other.example: %s %r" % (code, text))
		sink2 = Sink()
		try:
			reverse_serve(c, sink2)
		finally:
			c.close()
		rc = [a for t in sink2.txns for a in t.rcpts]
		check(rc == ["theirs@other.example"], "RCPTs for other: %r" % rc)
		wait_queue(d, queue_empty, "empty after both pulls")


if __name__ == "__main__":
	run_tests([
		test_ehlo_and_auth_offer,
		test_atrn_syntax_and_state,
		test_no_mail,
		test_wrong_password_and_slow_failures,
		test_unauthorized_domain,
		test_fetchmail_pull,
		test_fetchmail_no_mail,
		test_fetchmail_wrong_password,
		test_fetchmail_odmrs,
		test_starttls_plain,
		test_odmrs_python_ssl,
		test_rcpt_550_dsn,
		test_rcpt_450_stays,
		test_data_451_stays,
		test_drop_in_data,
		test_greeting_421,
		test_cross_customer,
	], "odmr")
