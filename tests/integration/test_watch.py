#!/usr/bin/env python3
"""What an operator of many customers watches (issue 18 items 8 and 10):
per domain the oldest held message's age, the last successful ATRN pull
and the last ETRN, in /metrics and in odrelayctl queue/stats (text and
--json); ATRN and AUTH by result; deliveries by outcome; the failed AUTH
log line names the user; mailq-style listing; --json on every listing."""

import json
import os
import re
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import Conn, check, fail, free_port, prog, run_tests
from pullsink import (PullFixture, Sink, add_user, odmr_login, run_prog,
    sample_message, submit)
import sink as smtpsink


def scrape(port):
	with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
	    timeout=10) as r:
		return r.read().decode()


def series(text, name, **labels):
	"""Value of one series in Prometheus text, or None."""
	want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
	for line in text.splitlines():
		if line.startswith("#"):
			continue
		m = re.match(r'^([a-z_]+)(?:\{([^}]*)\})? (\S+)$', line)
		if m and m.group(1) == name and (m.group(2) or "") == want:
			return float(m.group(3))
	return None


def wait_series(port, pred, name, what, **labels):
	deadline = time.time() + 10
	v = text = None
	while time.time() < deadline:
		text = scrape(port)
		v = series(text, name, **labels)
		if v is not None and pred(v):
			return v
		time.sleep(0.1)
	fail("%s: %s%r = %r\n%s" % (what, name, labels, v, text[-3000:]))


def stats_domain(d, name):
	r = d.ctl_ok("stats", "--json")
	for x in json.loads(r.out)["domains"]:
		if x["domain"] == name:
			return x
	fail("%s not in stats --json:\n%s" % (name, r.out))


def test_domain_facts():
	mport = free_port()
	with smtpsink.Sink() as etrn_sink, Sink() as pull_sink:
		domains = ("\n[domain example.org]\nhold = yes\n"
		    "\n[domain etrn.example]\nhold = yes\nroute = [127.0.0.1]:%d\n"
		    % etrn_sink.port)
		with PullFixture("watch", domains=domains,
		    extra="metrics_listen = %d\n" % mport) as d:
			add_user(d, "demo", "demo", "example.org")
			d.stop()
			d.start()
			start = time.time()
			q1 = submit(d.smtp_port, "s@client.test", ["a@example.org"],
			    sample_message("w1"))
			submit(d.smtp_port, "s@client.test", ["b@example.org"],
			    sample_message("w2"))
			submit(d.smtp_port, "s@client.test", ["c@etrn.example"],
			    sample_message("w3"))
			m = scrape(mport)
			for dom in ("example.org", "etrn.example"):
				for name in ("odrelay_domain_last_atrn_timestamp_seconds",
				    "odrelay_domain_last_etrn_timestamp_seconds"):
					check(series(m, name, domain=dom) == 0,
					    "%s for %s not 0 before any pull:\n%s"
					    % (name, dom, m))
				check(series(m, "odrelay_queue_oldest_age_seconds",
				    domain=dom) is not None, "no oldest age for " + dom)

			# mailq-style listing, held mark, sizes as in the log.
			r = d.ctl_ok("queue")
			if os.environ.get("WATCH_SHOW"):
				print(r.out)
			check(r.out.startswith("-Queue ID-") and
			    re.search(r"^-- \d+ Kbytes in 3 Requests\.", r.out, re.M),
			    "queue is not mailq-style:\n" + r.out)
			mm = re.search(r"^%s! +(\d+) .* held +s@client\.test$" % q1,
			    r.out, re.M)
			check(mm, "no held line for %s:\n%s" % (q1, r.out))
			logm = re.search(r"%s: from=<[^>]*>, size=(\d+)" % q1,
			    d.log_text())
			check(logm and logm.group(1) == mm.group(1),
			    "size in the log (%s) and in the listing (%s) differ"
			    % (logm and logm.group(1), mm.group(1)))
			check(re.search(r"^DOMAIN +MESSAGES +BYTES +OLDEST +LAST ATRN "
			    r"+LAST ETRN", r.out, re.M), "no domain table with the "
			    "facts:\n" + r.out)

			# A failed AUTH names the user; counted as failed.
			c, code, _ = odmr_login(d.odmr_port, user="demo",
			    password="nope")
			c.close()
			check(code == 535, "wrong password: %s" % code)
			wait_series(mport, lambda v: v >= 1,
			    "odrelay_auth_attempts_total", "failed AUTH counted",
			    result="failed")
			check(re.search(r"client=\[127\.0\.0\.1\], user=demo, "
			    r"auth=failed", d.log_text()), "failed AUTH log line "
			    "lacks the user:\n" + d.log_text()[-2000:])

			# A successful ATRN pull.
			r = run_prog([prog("odpull"), "--server", "127.0.0.1:%d"
			    % d.odmr_port, "--user", "demo", "--deliver",
			    "127.0.0.1:%d" % pull_sink.port, "--tls", "none",
			    "--domain", "example.org"],
			    env={"ODPULL_PASSWORD": "demo"}, timeout=40)
			check(r.returncode == 0, "odpull exit %d:\n%s"
			    % (r.returncode, r.out))
			t = wait_series(mport, lambda v: v > 0,
			    "odrelay_domain_last_atrn_timestamp_seconds",
			    "last ATRN after a pull", domain="example.org")
			check(start - 5 <= t <= time.time() + 5,
			    "last ATRN time %r not now" % t)
			wait_series(mport, lambda v: v >= 1,
			    "odrelay_atrn_requests_total", "ATRN ok counted",
			    result="ok")
			wait_series(mport, lambda v: v >= 2,
			    "odrelay_deliveries_total", "deliveries by outcome",
			    outcome="delivered")
			m = scrape(mport)
			check(series(m, "odrelay_queue_oldest_age_seconds",
			    domain="example.org") == 0, "example.org oldest not 0 "
			    "after the pull")

			# An ETRN.
			c = Conn(d.smtp_port)
			try:
				c.greet_ehlo("client.test")
				code, text = c.cmd("ETRN etrn.example")
				check(code in (250, 251, 253), "ETRN: %s %s"
				    % (code, text))
				c.cmd("QUIT")
			finally:
				c.close()
			wait_series(mport, lambda v: v > 0,
			    "odrelay_domain_last_etrn_timestamp_seconds",
			    "last ETRN", domain="etrn.example")
			etrn_sink.wait_accepted(1)

			x = stats_domain(d, "example.org")
			check(x["last_atrn"] and x["last_etrn"] is None,
			    "stats --json example.org: %r" % x)
			x = stats_domain(d, "etrn.example")
			check(x["last_etrn"] and x["last_atrn"] is None,
			    "stats --json etrn.example: %r" % x)
			for k in ("oldest", "oldest_age"):
				check(k in x, "stats --json lacks %s: %r" % (k, x))
			r = d.ctl_ok("stats", "--json")
			daemon = json.loads(r.out)["daemon"] or {}
			for k in ('odrelay_deliveries_total{outcome="delivered"}',
			    'odrelay_atrn_requests_total{result="ok"}',
			    'odrelay_auth_attempts_total{result="failed"}',
			    'odrelay_etrn_requests_total{result="started"}'):
				check(daemon.get(k, 0) >= 1, "stats --json daemon "
				    "counters lack %s: %r" % (k, daemon))
			r = d.ctl_ok("stats")
			if os.environ.get("WATCH_SHOW"):
				print(d.ctl_ok("queue").out + "\n" + r.out)
			check(re.search(r"^example\.org +hold .* -\s*$|^example\.org "
			    r"+hold +\d+ +\d+ +\S+ +\d+[smhd] +- *$", r.out, re.M),
			    "stats text lacks the ATRN age:\n" + r.out)

			# The facts survive a restart (kept in the queue).
			d.stop()
			d.start()
			x = stats_domain(d, "example.org")
			check(x["last_atrn"], "last ATRN lost in a restart: %r" % x)
			m = scrape(mport)
			check(series(m, "odrelay_domain_last_atrn_timestamp_seconds",
			    domain="example.org") > 0, "metric lost in a restart")


def test_json_everywhere():
	with PullFixture("watch-json") as d:
		add_user(d, "demo", "demo", "example.org", "list.example")
		qid = submit(d.smtp_port, "s@client.test", ["x@example.org"],
		    sample_message("j"))
		for args in (("queue", "--json"), ("stats", "--json"),
		    ("show", qid, "--json"), ("passwd", "list", "--json"),
		    ("quarantine", "--json"), ("recipients", "--json",
		    "example.org")):
			r = d.ctl_ok(*args)
			try:
				obj = json.loads(r.out)
			except ValueError as e:
				fail("odrelayctl %s: not JSON (%s):\n%s"
				    % (" ".join(args), e, r.out))
			if args[0] == "show":
				check(obj["id"] == qid and obj["state"] == "held",
				    "show --json: %r" % obj)
			if args[0] == "passwd":
				check(obj == [{"user": "demo", "domains":
				    ["example.org", "list.example"], "mechanisms":
				    obj[0]["mechanisms"]}] and "PLAIN" in
				    obj[0]["mechanisms"], "passwd list --json: %r" % obj)
		r = d.ctl("queue", "--bogus")
		check(r.returncode == 2, "usage error exit %d" % r.returncode)
		r = d.ctl("show", "0123456789ABCDEF")
		check(r.returncode == 1, "missing message exit %d" % r.returncode)


if __name__ == "__main__":
	run_tests([
		test_domain_facts,
		test_json_everywhere,
	], "watch")
