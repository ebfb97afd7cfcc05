#!/usr/bin/env python3
"""odpull: the customer side, against the real odrelayd, into a recording
local MTA (SMTP or LMTP)."""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Skip, check, fail, free_port, json_find, json_messages,
    make_cert, prog, run_tests)
from pullsink import (PullFixture, Sink, add_user, msg_rcpts, run_prog,
    sample_message, submit, wait_queue)

DOMAINS = """
[domain example.org]
hold = yes

[domain other.example]
hold = yes
"""


def daemon(name, tls=False, domains=DOMAINS):
	return PullFixture(name, domains=domains, tls=tls, start=False)


def up(d):
	"""Password file first (the daemon reads it at startup), then start."""
	add_user(d, "demo", "demo", "example.org")
	add_user(d, "other", "other-secret", "other.example")
	d.start()


def queue_empty(j):
	return not json_messages(j)


def pending(d, qid):
	m = json_find(d.queue_json(), qid)
	return None if m is None else msg_rcpts(m)


def dsns_for(j, addr):
	return [m for m in json_messages(j)
	    if m.get("sender") in ("", "<>", None) and addr in msg_rcpts(m)]


def odpull(d, sink_port, *extra, password="demo", server=None, tls="none",
    user="demo", timeout=40):
	args = [prog("odpull"), "--server", server or "127.0.0.1:%d" % d.odmr_port,
	    "--user", user, "--deliver", "127.0.0.1:%d" % sink_port,
	    "--tls", tls, "--timeout", "20", "-v"] + list(extra)
	return run_prog(args, env={"ODPULL_PASSWORD": password}, timeout=timeout)


def check_rc(r, want, what, sink=None, d=None):
	if r.returncode != want:
		fail("%s: odpull exit %d (want %d):\n%s%s%s" % (what, r.returncode,
		    want, r.out[-3000:], "\nsink:\n" + sink.dump() if sink else "",
		    "\ndaemon log:\n" + "\n".join(d.log_text().splitlines()[-25:])
		    if d else ""))


def check_bodies(sink, bodies, what):
	got = sorted(t.data for t, _ in sink.delivered())
	want = sorted(bodies.values())
	check(len(got) == len(want), "%s: %d messages at the sink, want %d\n%s"
	    % (what, len(got), len(want), sink.dump()))
	for w, h in zip(want, got):
		check(w == h, "%s: delivered text differs from the stored message "
		    "(%d vs %d octets)\nstored: %r\ngot:    %r" % (what, len(w),
		    len(h), w[:500], h[:500]))


def two_messages(d, tag):
	q1 = submit(d.smtp_port, "s1@client.test", ["user@example.org"],
	    sample_message(tag + "1"), " BODY=8BITMIME")
	q2 = submit(d.smtp_port, "s2@client.test",
	    ["a@example.org", "b@example.org"], sample_message(tag + "2",
	    b"end\r\n.\r\n"), " BODY=8BITMIME")
	return {q: d.body(q) for q in (q1, q2)}


# --- tests ----------------------------------------------------------------

def test_pull_plain():
	with daemon("odpull-plain") as d, Sink() as sink:
		up(d)
		bodies = two_messages(d, "plain")
		r = odpull(d, sink.port, "--domain", "example.org")
		check_rc(r, 0, "ATRN without TLS", sink, d)
		check_bodies(sink, bodies, "odpull --tls none")
		check(sink.delivered_rcpts() == ["a@example.org", "b@example.org",
		    "user@example.org"], "rcpts: %r" % sink.delivered_rcpts())
		wait_queue(d, queue_empty, "empty after odpull")


def test_pull_tls_required():
	with daemon("odpull-tls", tls=True) as d, Sink() as sink:
		up(d)
		bodies = two_messages(d, "tls")
		pwfile = os.path.join(d.dir, "odpull.pw")
		with open(pwfile, "w") as f:
			f.write("demo\n")
		os.chmod(pwfile, 0o600)
		# No --domain: every domain the account may pull.
		r = odpull(d, sink.port, "--ca-file", d.cert, "--password-file",
		    pwfile, password="not-this-one", tls="required",
		    server="127.0.0.1:%d" % d.odmr_port)
		check_rc(r, 0, "ATRN with verified STARTTLS", sink, d)
		check_bodies(sink, bodies, "odpull --tls required")
		wait_queue(d, queue_empty, "empty after odpull")


def test_tls_ip_server_name():
	# The test certificate has IP:127.0.0.1 in subjectAltName.
	with daemon("odpull-tlsip", tls=True) as d, Sink() as sink:
		up(d)
		bodies = two_messages(d, "tlsip")
		r = odpull(d, sink.port, "--ca-file", d.cert, "--domain",
		    "example.org", tls="required")
		check_rc(r, 0, "--tls required, --server 127.0.0.1 (IP SAN)", sink, d)
		check_bodies(sink, bodies, "odpull --server 127.0.0.1")


def test_wrong_ca_refuses():
	with daemon("odpull-badca", tls=True) as d, Sink() as sink:
		up(d)
		q = submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("badca"))
		other = tempfile.mkdtemp(prefix="odpull-otherca-")
		try:
			ca, _ = make_cert(other)
			r = odpull(d, sink.port, "--ca-file", ca, "--domain",
			    "example.org", tls="required",
			    server="127.0.0.1:%d" % d.odmr_port)
		finally:
			for f in os.listdir(other):
				os.unlink(os.path.join(other, f))
			os.rmdir(other)
		check_rc(r, 1, "wrong --ca-file", sink, d)
		check("certif" in r.out.lower() or "verif" in r.out.lower(),
		    "no word about the certificate:\n" + r.out)
		check(sink.connections == 0 and not sink.txns,
		    "the sink was contacted:\n" + sink.dump())
		time.sleep(0.3)
		log = d.log_text()
		check("auth=" not in log, "credentials went out after a failed "
		    "verification:\n" + log[-2000:])
		check(pending(d, q) == ["user@example.org"], "q: %r" % pending(d, q))


def test_wrong_password():
	with daemon("odpull-badpw") as d, Sink() as sink:
		up(d)
		q = submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("badpw"))
		r = odpull(d, sink.port, "--domain", "example.org", password="wrong")
		check_rc(r, 1, "wrong password", sink, d)
		check(not sink.txns, "sink got mail:\n" + sink.dump())
		check(pending(d, q) == ["user@example.org"], "q: %r" % pending(d, q))


def test_unauthorized_domain():
	with daemon("odpull-authz") as d, Sink() as sink:
		up(d)
		q = submit(d.smtp_port, "s@client.test", ["bob@other.example"],
		    sample_message("authz"))
		r = odpull(d, sink.port, "--domain", "other.example")
		check_rc(r, 1, "ATRN for another customer's domain", sink, d)
		check("450" in r.out, "no 450 in odpull's output:\n" + r.out)
		check(not sink.txns, "sink got mail:\n" + sink.dump())
		check(pending(d, q) == ["bob@other.example"], "q: %r" % pending(d, q))


def test_no_mail():
	with daemon("odpull-nomail") as d, Sink() as sink:
		up(d)
		r = odpull(d, sink.port, "--domain", "example.org")
		check_rc(r, 0, "no mail", sink, d)
		check("no mail" in r.out.lower(), "no 'no mail' message:\n" + r.out)
		check(sink.connections == 0, "the sink was contacted with no mail")


def test_local_mta_down_then_up():
	with daemon("odpull-down") as d:
		up(d)
		bodies = two_messages(d, "down")
		port = free_port()
		r = odpull(d, port, "--domain", "example.org")
		check_rc(r, 1, "local MTA down", None, d)
		time.sleep(0.5)
		j = d.queue_json()
		for q in bodies:
			check(json_find(j, q) is not None, "%s left the queue while the "
			    "local MTA was down" % q)
		with Sink(port=port) as sink:
			r = odpull(d, port, "--domain", "example.org")
			check_rc(r, 0, "second run, local MTA up", sink, d)
			check_bodies(sink, bodies, "after the local MTA came up")
		wait_queue(d, queue_empty, "empty after the second run")


def test_local_450_one_rcpt():
	with daemon("odpull-450") as d:
		up(d)
		q = submit(d.smtp_port, "s@client.test",
		    ["ok@example.org", "later@example.org"], sample_message("l450"))
		body = d.body(q)
		sink = Sink(rcpt_reply=lambda a: "450 4.2.0 mailbox busy"
		    if a.startswith("later@") else "250 2.1.5 ok")
		with sink:
			r = odpull(d, sink.port, "--domain", "example.org")
		check_rc(r, 1, "one recipient 450", sink, d)
		check(sink.delivered_rcpts() == ["ok@example.org"],
		    "delivered: %r" % sink.delivered_rcpts())
		check_bodies(sink, {q: body}, "450 for one rcpt")
		wait_queue(d, lambda j: json_find(j, q) is not None and
		    msg_rcpts(json_find(j, q)) == ["later@example.org"],
		    "only later@ left")
		check(not dsns_for(d.queue_json(), "s@client.test"),
		    "a DSN for a 450")


def test_local_550_one_rcpt():
	with daemon("odpull-550") as d:
		up(d)
		q = submit(d.smtp_port, "s@client.test",
		    ["ok@example.org", "gone@example.org"], sample_message("l550"))
		sink = Sink(rcpt_reply=lambda a: "550 5.1.1 no such user"
		    if a.startswith("gone@") else "250 2.1.5 ok")
		with sink:
			r = odpull(d, sink.port, "--domain", "example.org")
		check_rc(r, 0, "one recipient 550 (returned by the provider)", sink, d)
		check(sink.delivered_rcpts() == ["ok@example.org"],
		    "delivered: %r" % sink.delivered_rcpts())
		wait_queue(d, lambda j: json_find(j, q) is None and
		    dsns_for(j, "s@client.test"), "message gone, DSN queued")


def test_lmtp_mixed():
	with daemon("odpull-lmtp") as d:
		up(d)
		q = submit(d.smtp_port, "s@client.test",
		    ["a@example.org", "b@example.org", "c@example.org"],
		    sample_message("lmtp"))
		body = d.body(q)
		answers = {"a@example.org": "250 2.0.0 delivered",
		    "b@example.org": "452 4.2.2 over quota",
		    "c@example.org": "550 5.1.1 no such mailbox"}
		sink = Sink(lmtp=True, lmtp_reply=lambda a: answers[a])
		with sink:
			r = odpull(d, sink.port, "--lmtp", "--domain", "example.org")
		check_rc(r, 1, "LMTP with a 452 recipient", sink, d)
		check(all(len(t.rcpts) == 1 for t in sink.txns),
		    "more than one RCPT per LMTP transaction: %r" % sink.txns)
		check(sorted(a for t in sink.txns for a in t.rcpts) ==
		    ["a@example.org", "b@example.org", "c@example.org"],
		    "each recipient offered once: %r\n%s" % (sink.txns, sink.dump()))
		check(sink.delivered_rcpts() == ["a@example.org"],
		    "delivered: %r" % sink.delivered_rcpts())
		for t, _ in sink.delivered():
			check(t.data == body, "LMTP text differs from the stored message")
		wait_queue(d, lambda j: json_find(j, q) is not None and
		    msg_rcpts(json_find(j, q)) == ["b@example.org"] and
		    dsns_for(j, "s@client.test"), "b@ left, DSN for c@")


def test_lmtp_default_port():
	"""spec (Programs): --deliver defaults to 127.0.0.1:25 and --lmtp
	speaks LMTP there (odpull went to 127.0.0.1:24); a --deliver without
	a port means 25 too. Needs port 25 on 127.0.0.1: root and no MTA."""
	if os.geteuid() != 0:
		raise Skip("needs root to listen on 127.0.0.1:25")
	with daemon("odpull-lmtp25") as d:
		up(d)
		sink = Sink(lmtp=True, port=25)
		try:
			sink.start()
		except OSError as e:
			raise Skip("cannot listen on 127.0.0.1:25: %s" % e)
		try:
			for i, extra in enumerate(([], ["--deliver", "127.0.0.1"])):
				q = submit(d.smtp_port, "s@client.test", ["a@example.org"],
				    sample_message("lmtp25-%d" % i))
				r = run_prog([prog("odpull"), "--server", "127.0.0.1:%d"
				    % d.odmr_port, "--user", "demo", "--tls", "none",
				    "--timeout", "20", "--lmtp", "--domain", "example.org"]
				    + extra, env={"ODPULL_PASSWORD": "demo"}, timeout=40)
				check_rc(r, 0, "--lmtp %s" % (extra or "without --deliver"),
				    sink, d)
				check(len(sink.delivered()) == i + 1, "%s: the LMTP sink on "
				    "127.0.0.1:25 got %d messages\n%s" % (extra, len(
				    sink.delivered()), sink.dump()))
				wait_queue(d, lambda j: json_find(j, q) is None,
				    "pulled with %s" % extra)
		finally:
			sink.stop()


def test_etrn_prints_reply():
	with daemon("odpull-etrn") as d:
		up(d)
		submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("etrn"))
		r = run_prog([prog("odpull"), "--etrn", "--server",
		    "127.0.0.1:%d" % d.smtp_port, "--domain", "example.org",
		    "--timeout", "20"], timeout=30)
		check(r.returncode == 0, "odpull --etrn exit %d:\n%s"
		    % (r.returncode, r.out))
		check("example.org: 25" in r.out, "ETRN reply not printed:\n" + r.out)
		r = run_prog([prog("odpull"), "--etrn", "--server",
		    "127.0.0.1:%d" % d.smtp_port, "--domain", "not-ours.example",
		    "--timeout", "20"], timeout=30)
		check(r.returncode == 1, "ETRN for a foreign domain: exit %d:\n%s"
		    % (r.returncode, r.out))
		check("not-ours.example: 45" in r.out or "not-ours.example: 5" in r.out,
		    "ETRN refusal not printed:\n" + r.out)


def test_usage():
	r = run_prog([prog("odpull"), "--user", "demo"], env={"ODPULL_PASSWORD": "x"})
	check(r.returncode == 2, "no --server: exit %d" % r.returncode)
	r = run_prog([prog("odpull"), "--etrn", "--server", "127.0.0.1:1"])
	check(r.returncode == 2, "--etrn without --domain: exit %d" % r.returncode)


if __name__ == "__main__":
	if not os.access(prog("odpull"), os.X_OK):
		print("SKIP odpull: %s not built" % prog("odpull"))
		sys.exit(77)
	run_tests([
		test_usage,
		test_pull_plain,
		test_pull_tls_required,
		test_tls_ip_server_name,
		test_wrong_ca_refuses,
		test_wrong_password,
		test_unauthorized_domain,
		test_no_mail,
		test_local_mta_down_then_up,
		test_local_450_one_rcpt,
		test_local_550_one_rcpt,
		test_lmtp_mixed,
		test_lmtp_default_port,
		test_etrn_prints_reply,
	], "odpull")
