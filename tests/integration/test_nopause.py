#!/usr/bin/env python3
"""No pause with many domains (issue 16): a /metrics scrape of thousands
of domains is streamed in slices (chunked reply) with the same content as
a body built at once: every family's HELP/TYPE once, one line per domain
per family, no series twice; a client that leaves mid-scrape, HEAD, and
scrapes overlapping a reload; the configuration is parsed off the event
loop on SIGHUP and a broken file still keeps the old configuration."""

import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import Conn, Fixture, check, fail, free_port, run_tests
from pullsink import submit, sample_message

NDOM = 3000
FAMILIES = ["odrelay_queue_messages", "odrelay_queue_bytes",
    "odrelay_queue_oldest_age_seconds",
    "odrelay_domain_last_atrn_timestamp_seconds",
    "odrelay_domain_last_etrn_timestamp_seconds"]


def domains(n, prefix="d"):
	return "".join("\n[domain %s%d.test]\nhold = yes\n" % (prefix, i)
	    for i in range(n))


def raw_get(port, method="GET", version="1.1"):
	"""(status line, headers dict, raw body bytes) of one request."""
	s = socket.create_connection(("127.0.0.1", port), timeout=30)
	try:
		s.sendall(("%s /metrics HTTP/%s\r\nHost: 127.0.0.1\r\n"
		    "Connection: close\r\n\r\n" % (method, version)).encode())
		data = b""
		while True:
			b = s.recv(65536)
			if not b:
				break
			data += b
	finally:
		s.close()
	head, _, body = data.partition(b"\r\n\r\n")
	lines = head.decode().split("\r\n")
	hdrs = {}
	for l in lines[1:]:
		k, _, v = l.partition(":")
		hdrs[k.strip().lower()] = v.strip()
	return lines[0], hdrs, body


def dechunk(raw):
	out, pos, n = b"", 0, 0
	while True:
		eol = raw.index(b"\r\n", pos)
		size = int(raw[pos:eol], 16)
		pos = eol + 2
		if size == 0:
			return out, n
		out += raw[pos:pos + size]
		check(raw[pos + size:pos + size + 2] == b"\r\n", "bad chunk end")
		pos += size + 2
		n += 1


def check_body(text, names, what):
	"""Each family once, one line per domain in config order, no series
	twice, and the non-domain families present."""
	seen = set()
	heads = {}
	for line in text.splitlines():
		if line.startswith("# HELP "):
			name = line.split()[2]
			heads[name] = heads.get(name, 0) + 1
			continue
		if line.startswith("#"):
			continue
		series = line.rsplit(" ", 1)[0]
		check(series not in seen, "%s: series twice: %s" % (what, series))
		seen.add(series)
	for name in FAMILIES + ["odrelay_sessions", "odrelay_queue_map_used_bytes",
	    "odrelay_messages_received_total", "odrelay_queue_size_messages"]:
		check(heads.get(name) == 1, "%s: %s HELP %d times"
		    % (what, name, heads.get(name, 0)))
	for fam in FAMILIES:
		got = re.findall(r'^%s\{domain="([^"]+)"\} \d+$' % fam, text, re.M)
		check(got == names, "%s: %s: %d lines, first %r, want %d in "
		    "configuration order" % (what, fam, len(got), got[:3], len(names)))
	check(text.endswith("\n"), "%s: body does not end with a newline" % what)


def test_big_scrape():
	mport = free_port()
	names = ["d%d.test" % i for i in range(NDOM)]
	with Fixture("nopause", extra="metrics_listen = 127.0.0.1:%d\n" % mport,
	    domains=domains(NDOM)) as d:
		submit(d.smtp_port, "s@client.test", ["a@d7.test", "b@d2999.test"],
		    sample_message("np1"))
		status, hdrs, raw = raw_get(mport)
		check(" 200 " in status, "scrape: %s" % status)
		check(hdrs.get("transfer-encoding") == "chunked",
		    "a scrape of %d domains is not chunked: %r" % (NDOM, hdrs))
		body, nchunks = dechunk(raw)
		check(nchunks > 5, "only %d chunks for %d bytes" % (nchunks, len(body)))
		text = body.decode()
		check_body(text, names, "scrape")
		for dom in ("d7.test", "d2999.test"):
			check('odrelay_queue_messages{domain="%s"} 1\n' % dom in text,
			    "%s: one message not shown" % dom)
		check('odrelay_queue_messages{domain="d8.test"} 0\n' in text,
		    "d8.test: not 0")
		# HTTP/1.0 (no chunking: the body ends with the connection)
		# and urllib give the same lines.
		status, hdrs, raw = raw_get(mport, version="1.0")
		check(" 200 " in status and "transfer-encoding" not in hdrs,
		    "HTTP/1.0: %s %r" % (status, hdrs))
		check_body(raw.decode(), names, "HTTP/1.0 scrape")
		with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport,
		    timeout=30) as r:
			check_body(r.read().decode(), names, "urllib scrape")
		# HEAD: headers only.
		status, hdrs, raw = raw_get(mport, "HEAD")
		check(" 200 " in status and raw == b"", "HEAD: %s %r" % (status, raw[:80]))
		# Clients that leave after the first bytes, then scrapes at once.
		for _ in range(5):
			s = socket.create_connection(("127.0.0.1", mport), timeout=10)
			s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
			s.recv(4096)
			s.close()
		errs = []

		def one():
			try:
				with urllib.request.urlopen("http://127.0.0.1:%d/metrics"
				    % mport, timeout=30) as r:
					check_body(r.read().decode(), names, "parallel scrape")
			except Exception as e:	# reported below
				errs.append(repr(e))
		ts = [threading.Thread(target=one) for _ in range(3)]
		for t in ts:
			t.start()
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			c.expect(250, "NOOP", what="SMTP during scrapes")
			c.cmd("QUIT")
		finally:
			c.close()
		for t in ts:
			t.join(60)
		check(not errs, "parallel scrapes: %s" % errs)


def test_scrape_during_reload():
	"""SIGHUPs while scrapes stream: each body is still well formed (a
	reload may end the per-domain lines early, never repeat them)."""
	mport = free_port()
	with Fixture("nopause-hup", extra="metrics_listen = 127.0.0.1:%d\n" % mport,
	    domains=domains(NDOM)) as d:
		for i in range(4):
			s = socket.create_connection(("127.0.0.1", mport), timeout=30)
			s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			data = s.recv(1024)
			d.proc.send_signal(signal.SIGHUP)
			while True:
				b = s.recv(65536)
				if not b:
					break
				data += b
			s.close()
			head, _, raw = data.partition(b"\r\n\r\n")
			check(b"chunked" in head.lower(), "not chunked: %r" % head)
			text = dechunk(raw)[0].decode()
			seen = set()
			for line in text.splitlines():
				if line and not line.startswith("#"):
					k = line.rsplit(" ", 1)[0]
					check(k not in seen, "series twice across a reload: " + k)
					seen.add(k)
			check("\nodrelay_queue_map_used_bytes " in text and
			    text.endswith("\n"), "scrape across a reload lost its end")
		check(d.running(), "daemon died on scrapes and reloads")


def rewrite_conf(d, text):
	tmp = d.conf + ".new"
	with open(tmp, "w") as f:
		f.write(text)
	os.chmod(tmp, 0o644)
	os.rename(tmp, d.conf)


def wait_log(d, pattern, start, bound=20.0):
	rx = re.compile(pattern)
	end = time.time() + bound
	while time.time() < end:
		m = rx.search(d.log_text()[start:])
		if m:
			return m
		time.sleep(0.05)
	fail("no log line matching %r:\n%s" % (pattern, d.log_text()[start:][-2000:]))


def rcpt(d, addr, size=None):
	c = Conn(d.smtp_port)
	try:
		c.greet_ehlo()
		c.expect(250, "MAIL FROM:<s@client.test>%s"
		    % (" SIZE=%d" % size if size else ""))
		return c.cmd("RCPT TO:<%s>" % addr)
	finally:
		c.close()


def test_reload_big_file():
	"""SIGHUP with NDOM sections (parsed on a thread, the old one freed on
	a thread): a broken file keeps everything of the old configuration
	and names FILE:LINE; a quota set and dropped by reloads is applied;
	SIGHUPs during a parse end with the file's last content."""
	base = domains(NDOM)
	with Fixture("nopause-reload", domains=base) as d:
		check(rcpt(d, "a@d5.test")[0] == 250, "d5.test before reload")
		mark = len(d.log_text())
		broken = d.text.replace("[domain d5.test]", "[domain other.test]")
		broken += "\n[domain bad.test]\nhold = maybe\n"
		rewrite_conf(d, broken)
		d.proc.send_signal(signal.SIGHUP)
		wait_log(d, r"keeping the old configuration", mark)
		log = d.log_text()[mark:]
		nline = broken.count("\n", 0, broken.index("hold = maybe")) + 1
		check(re.search(r"odrelay\.conf:%d: " % nline, log),
		    "no odrelay.conf:%d: message:\n%s" % (nline, log[-2000:]))
		check(rcpt(d, "a@d5.test")[0] == 250, "d5.test after a failed reload")
		check(rcpt(d, "a@other.test")[0] == 550,
		    "other.test (only in the broken file) accepted")
		# A quota for one domain by reload, then dropped again.
		mark = len(d.log_text())
		rewrite_conf(d, d.text.replace("[domain d9.test]\nhold = yes\n",
		    "[domain d9.test]\nhold = yes\nmax_queue_size = 1K\n"))
		d.proc.send_signal(signal.SIGHUP)
		wait_log(d, r"reload: configuration .* loaded, %d domains" % NDOM, mark)
		code, text = rcpt(d, "a@d9.test", 5000)
		check(code == 452 and "4.2.2" in text, "quota by reload: %s %r"
		    % (code, text))
		check(rcpt(d, "a@d10.test", 5000)[0] == 250, "d10.test quota")
		mark = len(d.log_text())
		# Several SIGHUPs while parsing: the last file wins.
		for i in range(4):
			rewrite_conf(d, d.text + "\n[domain last%d.test]\nhold = yes\n" % i)
			d.proc.send_signal(signal.SIGHUP)
			time.sleep(0.01)
		deadline = time.time() + 20
		while time.time() < deadline:
			if rcpt(d, "a@last3.test")[0] == 250:
				break
			time.sleep(0.1)
		check(rcpt(d, "a@last3.test")[0] == 250,
		    "the last file was not loaded:\n" + d.log_text()[mark:][-2000:])
		check(rcpt(d, "a@d9.test", 5000)[0] == 250,
		    "the quota dropped by reload still applies")
		check(rcpt(d, "a@last2.test")[0] == 550, "last2.test accepted")


if __name__ == "__main__":
	run_tests([test_big_scrape, test_scrape_during_reload,
	    test_reload_big_file], "nopause")
