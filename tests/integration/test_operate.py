#!/usr/bin/env python3
"""Operating odrelayd: the /metrics endpoint and its figures, odrelayctl
stats, SIGHUP reload (good and broken files), SIGTERM under load, and a
queue whose format version this build does not understand."""

import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Daemon, Failure, Fixture, Skip, check, fail,
    free_port, queued_id, run_tests, send_message)

MSG = ("From: op@client.test\r\nTo: someone@example.org\r\n"
    "Subject: operate\r\n\r\nbody line\r\n")

METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)$")


def metrics_extra():
	port = free_port()
	return port, "metrics_listen = 127.0.0.1:%d\n" % port


def fetch(port, path="/metrics"):
	"""(status, content type, body text); no proxy, bounded."""
	opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
	try:
		with opener.open("http://127.0.0.1:%d%s" % (port, path),
		    timeout=5) as r:
			return (r.status, r.headers.get("Content-Type", ""),
			    r.read().decode(errors="replace"))
	except urllib.error.HTTPError as e:
		return e.code, e.headers.get("Content-Type", ""), ""
	except OSError as e:
		fail("GET %s on 127.0.0.1:%d: %s" % (path, port, e))


def scrape(port):
	"""Every sample of /metrics as {'name{labels}': float}."""
	status, ctype, body = fetch(port)
	check(status == 200, "/metrics: HTTP %s" % status)
	check(ctype.startswith("text/plain"), "/metrics Content-Type %r" % ctype)
	out = {}
	for line in body.splitlines():
		if not line or line.startswith("#"):
			continue
		m = METRIC_RE.match(line)
		check(m is not None, "/metrics: malformed sample line %r" % line)
		try:
			out[m.group(1)] = float(m.group(2))
		except ValueError:
			fail("/metrics: bad value in %r" % line)
	return out


def family(samples, name):
	"""{labels-or-'': value} for one metric name."""
	out = {}
	for k, v in samples.items():
		if k == name:
			out[""] = v
		elif k.startswith(name + "{"):
			out[k[len(name):]] = v
	return out


def total(samples, name):
	return sum(family(samples, name).values())


def wait_log(d, pattern, bound=5.0, start=0):
	"""Wait until the daemon log (from offset start) matches pattern."""
	rx = re.compile(pattern)
	end = time.time() + bound
	while time.time() < end:
		if rx.search(d.log_text()[start:]):
			return True
		time.sleep(0.05)
	return False


def wait_for(fn, bound=5.0):
	end = time.time() + bound
	while time.time() < end:
		v = fn()
		if v:
			return v
		time.sleep(0.05)
	return fn()


def deliver(d, n, rcpt="someone@example.org"):
	ids = []
	for _ in range(n):
		code, text = send_message(d.smtp_port, "op@client.test", [rcpt], MSG)
		check(code == 250, "message not accepted: %s %r" % (code, text))
		qid = queued_id(text)
		check(qid is not None, "no queue id in %r" % text)
		ids.append(qid)
	return ids


# --- metrics ---------------------------------------------------------

def test_metrics_endpoint_format():
	port, extra = metrics_extra()
	with Fixture("op-mfmt", extra=extra) as d:
		s = scrape(port)
		for name in ("odrelay_messages_received_total",
		    "odrelay_queue_messages{domain=\"example.org\"}",
		    "odrelay_queue_messages{domain=\"list.example\"}",
		    "odrelay_queue_bytes{domain=\"example.org\"}",
		    "odrelay_sessions{listener=\"smtp\"}",
		    "odrelay_sessions{listener=\"odmr\"}"):
			check(name in s, "/metrics lacks %s; has %s" % (name,
			    sorted(s)))
		check(s["odrelay_queue_messages{domain=\"example.org\"}"] == 0,
		    "empty queue: example.org gauge is %s" %
		    s["odrelay_queue_messages{domain=\"example.org\"}"])
		status, _, _ = fetch(port, "/nothing-here")
		check(status == 404, "GET /nothing-here: HTTP %s, expected 404" % status)
		check(d.running(), "daemon died while serving /metrics")


def test_metrics_queue_gauges():
	port, extra = metrics_extra()
	with Fixture("op-mgauge", extra=extra) as d:
		deliver(d, 3)
		s = scrape(port)
		k = "odrelay_queue_messages{domain=\"example.org\"}"
		check(s.get(k) == 3, "%s = %s after 3 messages, expected 3" %
		    (k, s.get(k)))
		kb = "odrelay_queue_bytes{domain=\"example.org\"}"
		check(s.get(kb, 0) >= 3 * len(MSG), "%s = %s after 3 messages of "
		    "%d octets" % (kb, s.get(kb), len(MSG)))
		k2 = "odrelay_queue_messages{domain=\"list.example\"}"
		check(s.get(k2) == 0, "%s = %s, expected 0" % (k2, s.get(k2)))
		# Deleting one moves the gauge down.
		d.ctl_ok("delete", "--domain", "example.org")
		s = wait_for(lambda: (lambda x: x if x.get(k) == 0 else None)(
		    scrape(port)), 5.0) or scrape(port)
		check(s.get(k) == 0, "%s = %s after delete --domain, expected 0"
		    % (k, s.get(k)))


def test_metrics_sessions_gauge():
	port, extra = metrics_extra()
	with Fixture("op-msess", extra=extra) as d:
		k = "odrelay_sessions{listener=\"smtp\"}"
		check(scrape(port).get(k) == 0, "no client: %s = %s" %
		    (k, scrape(port).get(k)))
		conns = []
		try:
			for _ in range(2):
				c = Conn(d.smtp_port)
				c.greet_ehlo()
				conns.append(c)
			v = scrape(port).get(k)
			check(v == 2, "two open SMTP sessions: %s = %s" % (k, v))
		finally:
			for c in conns:
				c.close()
		v = wait_for(lambda: scrape(port).get(k) == 0, 5.0)
		check(v, "sessions closed: %s = %s" % (k, scrape(port).get(k)))


def test_metrics_received_counter():
	port, extra = metrics_extra()
	with Fixture("op-mrecv", extra=extra) as d:
		s0 = scrape(port)
		deliver(d, 2)
		s1 = scrape(port)
		n = "odrelay_messages_received_total"
		check(n in s1, "/metrics lacks %s" % n)
		check(s1[n] - s0.get(n, 0) == 2, "%s went %s -> %s after 2 accepted "
		    "messages (smtpd never calls metrics_inc(METRIC_RECEIVED)?)"
		    % (n, s0.get(n), s1[n]))
		b = "odrelay_bytes_received_total"
		check(s1.get(b, 0) - s0.get(b, 0) >= 2 * len(MSG), "%s went %s -> %s "
		    "after 2 messages of %d octets" % (b, s0.get(b), s1.get(b),
		    len(MSG)))


def test_metrics_rejected_counter():
	port, extra = metrics_extra()
	with Fixture("op-mrej", extra=extra) as d:
		n = "odrelay_rejected_total"
		before = total(scrape(port), n)
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<op@client.test>")
			c.expect(550, "RCPT TO:<victim@elsewhere.test>", what="relay")
			c.expect(550, "RCPT TO:<nobody@list.example>",
			    what="unknown recipient")
			c.cmd("QUIT")
		finally:
			c.close()
		fam = family(scrape(port), n)
		check(sum(fam.values()) - before == 2, "%s: %s (was %s in all) after a "
		    "relay attempt and an unknown recipient, expected +2 (smtpd never "
		    "calls metrics_inc(METRIC_REJECTED)?)" % (n, fam, before))
		check(any("relay" in k for k, v in fam.items() if v > 0),
		    "%s has no reason=\"relay\" sample: %s" % (n, fam))


def test_metrics_etrn_counter():
	port, extra = metrics_extra()
	with Fixture("op-metrn", extra=extra) as d:
		n = "odrelay_etrn_requests_total"
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(251, "ETRN list.example", what="ETRN with nothing queued")
			c.expect(459, "ETRN elsewhere.test", what="ETRN for a stranger")
			c.cmd("QUIT")
		finally:
			c.close()
		fam = family(scrape(port), n)
		check(fam.get("{result=\"empty\"}") == 1, "%s: %s, expected "
		    "result=\"empty\" 1" % (n, fam))
		check(fam.get("{result=\"refused\"}") == 1, "%s: %s, expected "
		    "result=\"refused\" 1" % (n, fam))
		deliver(d, 1)
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect("25", "ETRN example.org", what="ETRN with mail queued")
			c.cmd("QUIT")
		finally:
			c.close()
		fam = family(scrape(port), n)
		started = fam.get("{result=\"started\"}", 0) + \
		    fam.get("{result=\"already-running\"}", 0)
		check(started == 1, "%s: %s after ETRN with mail queued" % (n, fam))
		# The run it started fails (no DNS server answers): one deferral.
		dn = "odrelay_recipients_deferred_total"
		v = wait_for(lambda: total(scrape(port), dn) >= 1, 10.0)
		check(v, "%s = %s after a delivery run deferred by DNS failure"
		    % (dn, total(scrape(port), dn)))


def test_ctl_stats_counters():
	port, extra = metrics_extra()
	with Fixture("op-stats", extra=extra) as d:
		deliver(d, 2)
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(251, "ETRN list.example")
			c.cmd("QUIT")
		finally:
			c.close()
		r = d.ctl_ok("stats")
		check("daemon counters:" in r.out and "not running" not in r.out,
		    "odrelayctl stats shows no daemon counters:\n" + r.out)
		check(re.search(r"example\.org\s+hold\s+2\s", r.out) is not None,
		    "stats: no 'example.org hold 2' row:\n" + r.out)
		check(re.search(r'odrelay_etrn_requests_total\{result="empty"\}\D+1\b',
		    r.out) is not None, "stats lacks the ETRN counter (empty = 1):\n"
		    + r.out)
		j = d.ctl_ok("stats", "--json")
		try:
			obj = json.loads(j.out)
		except ValueError as e:
			fail("stats --json: %s\n%s" % (e, j.out[:2000]))
		daemon = obj.get("daemon")
		check(isinstance(daemon, dict), "stats --json: daemon is %r" % daemon)
		# Every counter /metrics reports, stats reports with the same value.
		s = scrape(port)
		for k, v in s.items():
			if not k.startswith("odrelay_") or not k.split("{")[0].endswith(
			    "_total") or v == 0:
				continue
			check(k in daemon, "stats --json lacks %s (= %s on /metrics): %s"
			    % (k, v, sorted(daemon)))
			check(daemon[k] == v, "stats --json %s = %s, /metrics says %s"
			    % (k, daemon[k], v))
		rcv = daemon.get("odrelay_messages_received_total", 0)
		check(rcv == 2, "stats: odrelay_messages_received_total = %s after 2 "
		    "messages (smtpd never counts received mail?)" % rcv)
	# With the daemon stopped, stats still works from the queue and says so.
	with Fixture("op-stats2", start=False) as d:
		d.start()
		deliver(d, 1)
		check(d.stop() == 0, "SIGTERM: nonzero exit")
		r = d.ctl_ok("stats")
		check("not running" in r.out, "stats without daemon:\n" + r.out)
		check(re.search(r"example\.org\s+hold\s+1\s", r.out) is not None,
		    "stats without daemon: no 'example.org hold 1' row:\n" + r.out)


# --- SIGHUP ------------------------------------------------------------

NEW_DOMAIN = "\n[domain new.example]\nhold = yes\n"


def rewrite_conf(d, text):
	tmp = d.conf + ".new"
	with open(tmp, "w") as f:
		f.write(text)
	os.chmod(tmp, 0o644)
	os.rename(tmp, d.conf)


def test_sighup_adds_domain():
	with Fixture("op-hup") as d:
		old = Conn(d.smtp_port)
		try:
			old.greet_ehlo()
			old.expect(250, "MAIL FROM:<op@client.test>")
			old.expect(550, "RCPT TO:<x@new.example>",
			    what="before reload, new.example")
			old.expect(250, "RSET")
			mark = len(d.log_text())
			rewrite_conf(d, d.text + NEW_DOMAIN)
			d.proc.send_signal(signal.SIGHUP)
			check(wait_log(d, r"reload: configuration .* loaded", 5.0, mark),
			    "no 'reload: configuration ... loaded' in the log after "
			    "SIGHUP")
			check(d.running(), "daemon exited on SIGHUP")
			# A new session sees the new domain.
			code, text = send_message(d.smtp_port, "op@client.test",
			    ["x@new.example"], MSG)
			check(code == 250, "new session after reload: new.example "
			    "refused: %s %r" % (code, text))
			nid = queued_id(text)
			# The session opened before the reload is still usable.
			old.expect(250, "NOOP", what="old session after reload")
			old.expect(250, "MAIL FROM:<op@client.test>", what="old session")
			old.expect(250, "RCPT TO:<y@example.org>", what="old session")
			old.expect(354, "DATA", what="old session")
			old.send(MSG + ".\r\n")
			t = old.expect(250, what="old session end of data")
			oid = queued_id(t)
			old.expect(221, "QUIT")
		finally:
			old.close()
		ids = d.queue_ids()
		check(nid in ids and oid in ids, "queue after reload lacks %s or %s: %s"
		    % (nid, oid, sorted(ids)))
		q = d.ctl_ok("queue", "new.example")
		check(nid in q.out, "odrelayctl queue new.example lacks %s:\n%s"
		    % (nid, q.out))


def test_sighup_broken_file_keeps_config():
	with Fixture("op-hupbad") as d:
		# The broken file also drops example.org: if any of it were
		# applied, mail for example.org would be refused.
		broken = d.text.replace("[domain example.org]", "[domain other.test]")
		broken += "\nno_such_key = 1\nmax_message_size = lots\n"
		mark = len(d.log_text())
		rewrite_conf(d, broken)
		d.proc.send_signal(signal.SIGHUP)
		check(wait_log(d, r"keeping the old configuration", 5.0, mark),
		    "the log does not say the old configuration is kept:\n"
		    + d.log_text()[mark:][-2000:])
		log = d.log_text()[mark:]
		check("no_such_key" in log or re.search(r"odrelay\.conf:\d+", log),
		    "the log does not name the broken line:\n" + log[-2000:])
		check(d.running(), "daemon exited on SIGHUP with a broken file")
		code, text = send_message(d.smtp_port, "op@client.test",
		    ["someone@example.org"], MSG)
		check(code == 250, "mail for example.org refused after a failed "
		    "reload: %s %r" % (code, text))
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(250, "MAIL FROM:<op@client.test>")
			c.expect(550, "RCPT TO:<x@other.test>",
			    what="domain only in the broken file")
			c.cmd("QUIT")
		finally:
			c.close()
		# Fixing the file and SIGHUP again applies it.
		mark = len(d.log_text())
		rewrite_conf(d, d.text + NEW_DOMAIN)
		d.proc.send_signal(signal.SIGHUP)
		check(wait_log(d, r"reload: configuration .* loaded", 5.0, mark),
		    "fixed file: no 'configuration ... loaded' in the log")
		code, text = send_message(d.smtp_port, "op@client.test",
		    ["x@new.example"], MSG)
		check(code == 250, "after the fixed reload new.example refused: %s %r"
		    % (code, text))


def cram_md5(c, user, password):
	"""AUTH CRAM-MD5 on an open connection; returns the final reply."""
	code, text = c.cmd("AUTH CRAM-MD5")
	check(code == 334, "AUTH CRAM-MD5: %s %r" % (code, text))
	chal = base64.b64decode(text[4:].strip())
	mac = hmac.new(password.encode(), chal, "md5").hexdigest()
	return c.cmd(base64.b64encode(("%s %s" % (user, mac)).encode()).decode())


def odmr_auth(d, user, password):
	c = Conn(d.odmr_port)
	try:
		c.expect(220, what="ODMR greeting")
		c.expect(250, "EHLO client.test")
		code, text = cram_md5(c, user, password)
		atrn = c.cmd("ATRN example.org") if code == 235 else (None, "")
		c.cmd("QUIT")
		return code, text, atrn
	finally:
		c.close()


def test_sighup_reloads_passwd():
	with Fixture("op-hup-pw") as d:
		code, text, _ = odmr_auth(d, "office", "s3cret-pw")
		check(code == 535, "unknown user: AUTH answered %s %r" % (code, text))
		d.ctl_ok("passwd", "add", "office", "example.org",
		    input=b"s3cret-pw\n")
		mark = len(d.log_text())
		d.proc.send_signal(signal.SIGHUP)
		check(wait_log(d, r"reload: configuration .* loaded", 5.0, mark),
		    "no 'reload: configuration ... loaded' in the log after SIGHUP")
		code, text, atrn = odmr_auth(d, "office", "s3cret-pw")
		check(code == 235, "user added with odrelayctl passwd + SIGHUP: AUTH "
		    "answered %s %r" % (code, text))
		check(atrn[0] == 453, "ATRN example.org with nothing queued: %s %r"
		    % atrn)


# --- SIGTERM under load -----------------------------------------------

N_CLIENTS = 8
PER_CONN = 5


class Load:
	def __init__(self, port):
		self.port = port
		self.lock = threading.Lock()
		self.acked = set()
		self.stop = threading.Event()
		self.threads = [threading.Thread(target=self.client, args=(i,),
		    daemon=True) for i in range(N_CLIENTS)]

	def client(self, idx):
		n = 0
		while not self.stop.is_set():
			try:
				c = Conn(self.port, timeout=10)
			except OSError:
				time.sleep(0.05)	# refused: the daemon is gone
				continue
			try:
				c.greet_ehlo("load%d.client.test" % idx)
				for _ in range(PER_CONN):
					c.expect(250, "MAIL FROM:<load@client.test>")
					c.expect(250, "RCPT TO:<load@example.org>")
					c.expect(354, "DATA")
					n += 1
					c.send("Subject: load %d-%d\r\n\r\nx\r\n.\r\n" % (idx, n))
					code, text = c.reply()
					if code != 250:
						break
					qid = queued_id(text)
					with self.lock:
						self.acked.add(qid)
				c.cmd("QUIT")
			except (Failure, OSError):
				pass	# 421 or a dropped connection around the stop
			finally:
				c.close()

	def count(self):
		with self.lock:
			return len(self.acked)


def test_sigterm_under_load():
	with Fixture("op-term", extra="max_connections_per_ip = 100\n") as d:
		load = Load(d.smtp_port)
		for t in load.threads:
			t.start()
		t0 = time.time()
		while load.count() < 100 and time.time() - t0 < 30:
			time.sleep(0.02)
		check(load.count() >= 100, "only %d messages acknowledged in 30 s"
		    % load.count())
		try:
			rc = d.stop(signal.SIGTERM, bound=40.0)
		finally:
			load.stop.set()
			for t in load.threads:
				t.join(15)
		check(not any(t.is_alive() for t in load.threads), "client threads hung")
		check(rc == 0, "SIGTERM under load: exit status %s, expected 0" % rc)
		acked = set(load.acked)
		check(None not in acked, "a 250 reply without a queue id")
		check(re.search(r"odrelayd stopped", d.log_text()) is not None,
		    "no 'odrelayd stopped' in the log")
		d.start()
		ids = d.queue_ids()
		missing = sorted(acked - ids)
		check(not missing, "%d of %d acknowledged messages missing after "
		    "SIGTERM and restart, e.g. %s" % (len(missing), len(acked),
		    missing[:10]))
		print("  %d acknowledged, %d queued after restart"
		    % (len(acked), len(ids)), flush=True)


# --- queue format version -------------------------------------------

VERSION_KEY = "version".encode().hex()


def test_queue_version_unknown():
	for tool in ("mdb_dump", "mdb_load"):
		if shutil.which(tool) is None:
			raise Skip("%s not installed (lmdb-utils)" % tool)
	with Fixture("op-ver", start=False) as d:
		d.start()
		deliver(d, 1)
		check(d.stop() == 0, "first SIGTERM: nonzero exit")
		r = subprocess.run(["mdb_dump", "-s", "meta", d.queue_dir],
		    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
		dump = r.stdout.decode(errors="replace")
		check(r.returncode == 0, "mdb_dump -s meta: %s" % dump)
		lines = dump.splitlines()
		try:
			i = [l.strip() for l in lines].index(VERSION_KEY)
		except ValueError:
			fail("meta has no 'version' key:\n" + dump)
		check(lines[i + 1].strip() == "00000001" or
		    len(lines[i + 1].strip()) == 8,
		    "version value is not 4 octets: %r" % lines[i + 1])
		lines[i + 1] = " 000003e7"		# 999
		path = os.path.join(d.dir, "meta.dump")
		with open(path, "w") as f:
			f.write("\n".join(lines) + "\n")
		r = subprocess.run(["mdb_load", "-s", "meta", "-f", path, d.queue_dir],
		    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
		check(r.returncode == 0, "mdb_load: %s" % r.stdout.decode(
		    errors="replace"))
		r = subprocess.run(["mdb_dump", "-s", "meta", d.queue_dir],
		    stdout=subprocess.PIPE, timeout=30)
		check(b"000003e7" in r.stdout, "version not changed by mdb_load")
		data = os.path.join(d.queue_dir, "data.mdb")
		before = hashlib.sha256(open(data, "rb").read()).hexdigest()
		mark = len(d.log_text())
		try:
			d.start()
			fail("odrelayd started on a queue of format version 999")
		except Failure as e:
			if d.running():
				raise
			if "exited with status" not in str(e):
				raise
		rc = d.proc.returncode
		d.stop()
		check(rc == 2, "unknown queue version: exit status %s, expected 2" % rc)
		log = d.log_text()[mark:]
		check(re.search(r"version", log) and "999" in log,
		    "the log does not say the queue's version (999) is not "
		    "understood:\n" + log[-2000:])
		after = hashlib.sha256(open(data, "rb").read()).hexdigest()
		check(before == after, "odrelayd changed data.mdb of a queue it "
		    "does not understand")
		r = subprocess.run(["mdb_dump", "-s", "meta", d.queue_dir],
		    stdout=subprocess.PIPE, timeout=30)
		check(b"000003e7" in r.stdout, "the version was rewritten")


if __name__ == "__main__":
	run_tests([
		test_metrics_endpoint_format,
		test_metrics_queue_gauges,
		test_metrics_sessions_gauge,
		test_metrics_received_counter,
		test_metrics_rejected_counter,
		test_metrics_etrn_counter,
		test_ctl_stats_counters,
		test_sighup_adds_domain,
		test_sighup_broken_file_keeps_config,
		test_sighup_reloads_passwd,
		test_sigterm_under_load,
		test_queue_version_unknown,
	], "operate")
