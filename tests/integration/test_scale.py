#!/usr/bin/env python3
"""Scale and space (issues 16 and 17 item 3): early 452 refusals at MAIL
and RCPT, expiry of one message among many, compaction while the daemon
runs (nothing lost or duplicated), and a full file system drained by ATRN
twice with no duplicate delivery."""

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, Skip, check, fail, free_port, json_messages, prog,
    run_tests)
from pullsink import (PullFixture, Sink, add_user, msg_rcpts, odmr_login,
    reverse_serve, wait_queue)


def body(tag, size):
	"""A message of about size octets with a unique tag in its subject."""
	head = ("From: s@client.test\r\nTo: x@example.org\r\n"
	    "Subject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\n" % (tag, tag))
	line = ("%s " % tag) + "x" * 70 + "\r\n"
	n = max(1, (size - len(head)) // len(line))
	return (head + line * n).encode()


def send_many(port, rcpt, tags, size, sender="s@client.test", params=""):
	"""Many transactions over one session. Returns {tag: reply code} and
	stops at the first refusal (its code and text in the result too)."""
	c = Conn(port, timeout=20)
	out = {}
	try:
		c.greet_ehlo("client.test")
		for tag in tags:
			code, text = c.cmd("MAIL FROM:<%s>%s" % (sender, params))
			if code != 250:
				out[tag] = (code, text)
				break
			code, text = c.cmd("RCPT TO:<%s>" % rcpt)
			if code != 250:
				out[tag] = (code, text)
				c.cmd("RSET")
				break
			c.expect(354, "DATA")
			c.send(body(tag, size) + b".\r\n")
			code, text = c.reply()
			out[tag] = (code, text)
			if code != 250:
				break
		c.cmd("QUIT")
	finally:
		c.close()
	return out


def accepted(res):
	return [t for t, (c, _) in res.items() if c == 250]


def tags_of(sink):
	"""The subject tag of every message the sink accepted."""
	out = []
	for t, _ in sink.delivered():
		m = re.search(rb"^Subject: (\S+)", t.data, re.M)
		out.append(m.group(1).decode() if m else "?")
	return out


# --- early refusals --------------------------------------------------------

QUOTA_DOMAINS = """
[domain quota.test]
hold = yes
max_queue_size = 20K

[domain free.test]
hold = yes
"""


def test_early_refusals():
	with Fixture("scale-early", domains=QUOTA_DOMAINS) as d:
		res = send_many(d.smtp_port, "a@quota.test", ["q1"], 15000)
		check(accepted(res) == ["q1"], "first message: %r" % res)
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			# Announced size over what the quota has left: refused at RCPT
			# with 4.2.2 naming the domain; other domains unaffected.
			c.expect(250, "MAIL FROM:<s@client.test> SIZE=10000")
			t = c.expect(452, "RCPT TO:<b@quota.test>")
			check("4.2.2" in t and "quota.test" in t, "RCPT reply %r" % t)
			c.expect(250, "RCPT TO:<b@free.test>")
			c.expect(250, "RSET")
			# Not announced: accepted at RCPT, refused at the end of DATA.
			c.expect(250, "MAIL FROM:<s@client.test>")
			c.expect(250, "RCPT TO:<b@quota.test>")
			c.expect(354, "DATA")
			c.send(body("q2", 10000) + b".\r\n")
			code, t = c.reply()
			check(code == 452 and "4.2.2" in t and "quota.test" in t,
			    "end of DATA over quota: %s %r" % (code, t))
			# A small one still fits.
			c.expect(250, "MAIL FROM:<s@client.test> SIZE=1000")
			c.expect(250, "RCPT TO:<b@quota.test>")
			c.cmd("QUIT")
		finally:
			c.close()
	# The file system cannot keep queue_min_free: refused at MAIL.
	with Fixture("scale-full", extra="queue_min_free = 100000G\n",
	    domains=QUOTA_DOMAINS) as d:
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			t = c.expect(452, "MAIL FROM:<s@client.test> SIZE=1000")
			check("4.3.1" in t, "MAIL reply %r" % t)
			t = c.expect(452, "MAIL FROM:<s@client.test>")
			check("4.3.1" in t, "MAIL reply %r" % t)
			c.cmd("QUIT")
		finally:
			c.close()
		r = d.ctl_ok("stats")
		check("new mail refused" in r.out, "stats shows no low space:\n"
		    + r.out)


# --- expiry among many -----------------------------------------------------

EXPIRY_DOMAINS = """
[domain keep.test]
hold = yes

[domain short.test]
hold = yes
queue_lifetime = 2s
"""


def test_expiry_among_many():
	n = 600
	with Fixture("scale-expiry", domains=EXPIRY_DOMAINS) as d:
		res = send_many(d.smtp_port, "k@keep.test",
		    ["k%d" % i for i in range(n // 2)], 300)
		check(len(accepted(res)) == n // 2, "first half: %d" % len(res))
		res = send_many(d.smtp_port, "s@short.test", ["short"], 300)
		check(accepted(res) == ["short"], "short: %r" % res)
		res = send_many(d.smtp_port, "k@keep.test",
		    ["k%d" % i for i in range(n // 2, n)], 300)
		check(len(accepted(res)) == n // 2, "second half: %d" % len(res))

		def expired(j):
			ms = json_messages(j)
			return (not any("s@short.test" in msg_rcpts(m) for m in ms)
			    and any(m.get("sender") == "" for m in ms))
		j = wait_queue(d, expired, "short.test message returned", timeout=20)
		kept = [m for m in json_messages(j) if "k@keep.test" in msg_rcpts(m)]
		check(len(kept) == n, "held messages: %d of %d" % (len(kept), n))
		dsns = [m for m in json_messages(j) if m.get("sender") == ""]
		check(len(dsns) == 1, "%d notices, expected 1" % len(dsns))
		check("s@client.test" in msg_rcpts(dsns[0]), "notice to %r"
		    % msg_rcpts(dsns[0]))
		# A reload that brings a new age (keep.test: 1s) reads the queue
		# for it: every held message is returned now.
		with open(d.conf, "w") as f:
			f.write(d.text.replace("[domain keep.test]\nhold = yes\n",
			    "[domain keep.test]\nhold = yes\nqueue_lifetime = 1s\n"))
		d.proc.send_signal(signal.SIGHUP)
		wait_queue(d, lambda j: not any("k@keep.test" in msg_rcpts(m)
		    for m in json_messages(j)), "keep.test returned after reload",
		    timeout=30)


# --- compaction while the daemon runs ---------------------------------------

def etrn(d, domain, code):
	c = Conn(d.smtp_port)
	try:
		c.greet_ehlo()
		c.expect(code, "ETRN " + domain)
		c.cmd("QUIT")
	finally:
		c.close()


def compact_domains(sink_port):
	return """
[domain gone.test]
hold = yes

[domain kept.test]
hold = yes
route = 127.0.0.1:%d
""" % sink_port


def test_compact_live():
	with Sink() as sink, Fixture("scale-compact",
	    domains=compact_domains(sink.port)) as d:
		res = send_many(d.smtp_port, "g@gone.test",
		    ["g%d" % i for i in range(300)], 20000)
		check(len(accepted(res)) == 300, "gone.test: %d" % len(res))
		res = send_many(d.smtp_port, "k@kept.test",
		    ["a%d" % i for i in range(50)], 20000)
		want = set(accepted(res))
		check(len(want) == 50, "kept.test: %d" % len(want))
		d.ctl_ok("delete", "--domain", "gone.test")
		# Another module's database (the ETRN times) exists before the
		# compaction and must still be usable after it.
		etrn(d, "gone.test", 251)
		data = os.path.join(d.queue_dir, "data.mdb")
		before = os.path.getsize(data)
		# Mail keeps arriving while the compaction runs.
		extra = {}

		def more():
			extra.update(send_many(d.smtp_port, "k@kept.test",
			    ["b%d" % i for i in range(60)], 20000))
		th = threading.Thread(target=more)
		th.start()
		r = d.ctl_ok("compact", timeout=60)
		th.join(60)
		m = re.search(r"before=(\d+) after=(\d+)", r.out)
		check(m and int(m.group(2)) * 2 < int(m.group(1)),
		    "compact output %r" % r.out)
		want |= set(accepted(extra))
		check(len(accepted(extra)) == 60, "during compaction: %r"
		    % {k: v for k, v in extra.items() if v[0] != 250})
		check(int(m.group(1)) >= before, "size before %s, file had %d"
		    % (m.group(1), before))
		j = d.queue_json()
		check(len(json_messages(j)) == len(want), "queue holds %d, want %d"
		    % (len(json_messages(j)), len(want)))
		# Nothing lost or duplicated: deliver them all and count.
		etrn(d, "kept.test", 253)
		wait_queue(d, lambda j: not json_messages(j), "kept.test delivered",
		    timeout=30)
		got = tags_of(sink)
		check(sorted(got) == sorted(want), "delivered %d (%d distinct), "
		    "want %d" % (len(got), len(set(got)), len(want)))
		r = d.ctl_ok("stats")
		check(re.search(r"^messages:\s+0$", r.out, re.M), "stats:\n" + r.out)
		st = json.loads(d.ctl_ok("stats", "--json").out)
		last = {x["domain"]: x.get("last_etrn") for x in st["domains"]}
		check(last.get("gone.test") and last.get("kept.test"),
		    "ETRN times after the compaction: %r" % last)


# --- a full file system, drained by ATRN twice -----------------------------

def mount_tmpfs(path, size):
	os.makedirs(path, exist_ok=True)
	r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700"
	    % size, "tmpfs", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
	if r.returncode != 0:
		raise Skip("cannot mount a tmpfs (needs root): %s"
		    % r.stderr.decode(errors="replace").strip())
	if os.geteuid() == 0:
		pw = pwd.getpwnam("nobody")
		os.chown(path, pw.pw_uid, pw.pw_gid)


def fill_disk(path):
	"""Take every free byte of the file system (as root may)."""
	fd = None
	try:
		fd = os.open(os.path.join(path, "filler"), os.O_WRONLY | os.O_CREAT,
		    0o600)
		for chunk in (65536, 512):
			while True:
				os.write(fd, b"\0" * chunk)
	except OSError:
		pass		# full
	finally:
		if fd is not None:
			os.close(fd)


def atrn_drain(d, sink):
	c, code, text = odmr_login(d.odmr_port, "demo", "demo")
	check(code == 235, "AUTH: %s %r" % (code, text))
	code, text = c.cmd("ATRN example.org")
	if code == 453:
		c.close()
		return False
	check(code == 250, "ATRN: %s %r" % (code, text))
	try:
		reverse_serve(c, sink)
	finally:
		c.close()
	return True


def wait_accepting(d, timeout=10.0):
	"""Space is back: the daemon accepts MAIL again (it rechecks its
	reserve every second)."""
	deadline = time.time() + timeout
	while True:
		c = Conn(d.smtp_port)
		try:
			c.greet_ehlo()
			code, text = c.cmd("MAIL FROM:<s@client.test> SIZE=16000")
			c.cmd("QUIT")
		finally:
			c.close()
		if code == 250:
			return
		check(time.time() < deadline, "still refused with space back: %s %r"
		    % (code, text))
		time.sleep(0.3)


DISK_DOMAINS = """
[domain example.org]
hold = yes
"""


def test_full_disk_atrn_twice():
	d = PullFixture("scale-disk", extra="queue_map_size = 64M\n"
	    "queue_min_free = 256K\n", domains=DISK_DOMAINS, start=False)
	mnt = None
	try:
		with d as dd:
			mnt = dd.queue_dir
			mount_tmpfs(mnt, "6m")
			add_user(dd, "demo", "demo", "example.org")
			dd.start()
			seen = []
			for rnd in (1, 2):
				tags = ["r%dm%d" % (rnd, i) for i in range(2000)]
				res = send_many(dd.smtp_port, "u@example.org", tags, 64000)
				ok = accepted(res)
				last = res[tags[len(ok)]] if len(ok) < len(tags) else None
				check(len(ok) >= 20 and last is not None and last[0] == 452
				    and "4.3.1" in last[1], "round %d: %d accepted, then %r"
				    % (rnd, len(ok), last))
				# Whatever the reserve left, the disk is now full.
				fill_disk(mnt)
				with Sink() as sink:
					check(atrn_drain(dd, sink), "round %d: no mail" % rnd)
					got = tags_of(sink)
				check(sorted(got) == sorted(ok), "round %d: delivered %d "
				    "(%d distinct) of %d accepted" % (rnd, len(got),
				    len(set(got)), len(ok)))
				seen += got
				wait_queue(dd, lambda j: not json_messages(j),
				    "deliveries recorded", timeout=20)
				# After a restart nothing comes again.
				check(dd.stop() == 0, "odrelayd exit status")
				dd.start()
				with Sink() as sink:
					again = atrn_drain(dd, sink)
					check(not again and not sink.delivered(), "round %d: "
					    "delivered again after restart: %r" % (rnd,
					    tags_of(sink)[:10]))
				if os.path.exists(os.path.join(mnt, "filler")):
					os.unlink(os.path.join(mnt, "filler"))
				wait_accepting(dd)
			check(len(seen) == len(set(seen)), "duplicates across rounds")
	finally:
		if mnt is not None:
			subprocess.run(["umount", "-l", mnt], stdout=subprocess.DEVNULL,
			    stderr=subprocess.DEVNULL)


# --- ATRN of a domain with more than one piece of mail ----------------------

def test_atrn_pieces():
	"""ATRN reads the domain's mail a piece (256) at a time as it goes
	out: 700 messages, each delivered once, none left."""
	d = PullFixture("scale-atrn", domains=DISK_DOMAINS, start=False)
	with d as dd:
		add_user(dd, "demo", "demo", "example.org")
		dd.start()
		tags = ["p%d" % i for i in range(700)]
		res = send_many(dd.smtp_port, "u@example.org", tags, 300)
		check(len(accepted(res)) == 700, "accepted %d" % len(accepted(res)))
		with Sink() as sink:
			check(atrn_drain(dd, sink), "ATRN found no mail")
			got = tags_of(sink)
		check(sorted(got) == sorted(tags), "delivered %d (%d distinct) of 700"
		    % (len(got), len(set(got))))
		wait_queue(dd, lambda j: not json_messages(j), "all recorded",
		    timeout=20)
		check("messages=256+, result=reversing" in dd.log_text(),
		    "no first-piece log line")


# --- odrelayctl stats and queue DOMAIN: from the daemon or the file ---------

CTL_NDOM = 6000		# more than one slice (5000) of the "domains" answer


def ctl_domains(closed_port):
	out = ["[domain relay.test]\nhold = no\nroute = 127.0.0.1:%d\n"
	    % closed_port]
	out += ["[domain c%d.test]\nhold = yes\n" % i for i in range(CTL_NDOM)]
	return "\n".join(out)


def control_lines(d, line):
	"""The daemon's whole answer to one control command, as lines."""
	import socket
	s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
	s.settimeout(10)
	s.connect(d.sock)
	s.sendall(line.encode() + b"\n")
	data = b""
	while True:
		b = s.recv(65536)
		if not b:
			break
		data += b
	s.close()
	return data.decode().splitlines()


def stats_view(d):
	"""stats --json and the table's first four columns, without what
	moves by itself (ages, free disk space, the daemon's counters)."""
	j = json.loads(d.ctl_ok("stats", "--json").out)
	for x in j["domains"]:
		x.pop("oldest_age", None)
	j.pop("daemon", None)
	j["space"].pop("fs_free", None)
	rows = [ln.split()[:4] for ln in d.ctl_ok("stats").out.split("\n\n")[0]
	    .splitlines()]
	return j, rows


def queue_view(d, domain):
	j = json.loads(d.ctl_ok("queue", domain, "--json").out)
	for x in j["domains"]:
		x.pop("oldest_age", None)
	txt = d.ctl_ok("queue", domain).out
	return j, [ln for ln in txt.splitlines() if "Kbytes" not in ln and
	    not re.match(r"\S+\.test\s+\d+\s+\d+\s", ln)]


def mode_of(rows, domain):
	return [r[1] for r in rows if r and r[0] == domain]


def test_ctl_daemon_and_file():
	"""odrelayctl stats and queue DOMAIN read the domains' modes from the
	running daemon (the configuration it runs with, over the control
	socket: the file is not parsed), and from the file when it is
	stopped; both give the same answers."""
	from odtest import free_port
	with Fixture("scale-ctl", domains=ctl_domains(free_port())) as d:
		for dom, n in (("c7.test", 3), ("c2499.test", 1), ("relay.test", 2)):
			res = send_many(d.smtp_port, "u@" + dom,
			    ["%s-%d" % (dom, i) for i in range(n)], 500)
			check(len(accepted(res)) == n, "%s: %r" % (dom, res))
		# The relay domain's mail has been tried once (deferred, not
		# being delivered) before the views are compared.
		wait_queue(d, lambda j: all(r.get("attempts", 0) >= 1
		    for m in json_messages(j) if "u@relay.test" in msg_rcpts(m)
		    for r in m.get("recipients", [])), "relay.test tried",
		    timeout=30)

		# The daemon's answers: every domain in slices, and one.
		lines = control_lines(d, "domains")
		check(lines[-1] == "250 %d domains" % (CTL_NDOM + 1),
		    "last line %r" % lines[-1:])
		body = lines[:-1]
		check(len(body) == CTL_NDOM + 1 and
		    all(ln.startswith("250-") for ln in body),
		    "%d lines: %r" % (len(body), body[:3]))
		check("250-relay.test relay" in body and "250-c0.test hold" in body,
		    "modes: %r" % body[:3])
		check(control_lines(d, "domain C7.TEST.") == ["250 hold"],
		    "domain C7.TEST.")
		check(control_lines(d, "domain relay.test") == ["250 relay"],
		    "domain relay.test")
		check(control_lines(d, "domain none.test")[0].startswith("550"),
		    "domain none.test")
		check(control_lines(d, "domain")[0].startswith("501"), "domain")

		run_stats = stats_view(d)
		run_queue = {dom: queue_view(d, dom) for dom in
		    ("c7.test", "relay.test", "none.test")}
		j, rows = run_stats
		check(len(j["domains"]) == CTL_NDOM + 1, "%d domains in stats"
		    % len(j["domains"]))
		by = {x["domain"]: x for x in j["domains"]}
		check(by["c7.test"]["messages"] == 3 and by["c7.test"]["hold"] and
		    by["relay.test"]["messages"] == 2 and
		    not by["relay.test"]["hold"] and by["c7.test"]["oldest"],
		    "stats: %r %r" % (by["c7.test"], by["relay.test"]))
		names = [r[0] for r in rows[1:]]
		check(names == sorted(names) and len(names) == CTL_NDOM + 1,
		    "table not in name order")
		states = {m["state"] for m in json_messages(run_queue["c7.test"][0])}
		check(states == {"held"}, "c7.test states %r" % states)
		states = {m["state"] for m in json_messages(run_queue["relay.test"][0])}
		check(states == {"deferred"}, "relay.test states %r" % states)

		# Modes are the daemon's while it runs: a change to the file
		# shows only after a reload, or with the daemon stopped.
		edited = d.text.replace("[domain c9.test]\nhold = yes\n",
		    "[domain c9.test]\nhold = no\n") + "\n[domain late.test]\n"
		with open(d.conf, "w") as f:
			f.write(edited)
		_, rows = stats_view(d)
		check(mode_of(rows, "c9.test") == ["hold"] and
		    not mode_of(rows, "late.test"), "running: c9 %r, late %r" %
		    (mode_of(rows, "c9.test"), mode_of(rows, "late.test")))
		with open(d.conf, "w") as f:
			f.write(d.text)

		check(d.stop() == 0, "odrelayd exit status")
		check(stats_view(d) == run_stats, "stats differ with the daemon "
		    "stopped:\n%r\n%r" % (stats_view(d)[0]["domains"][:3],
		    run_stats[0]["domains"][:3]))
		for dom, view in run_queue.items():
			check(queue_view(d, dom) == view, "queue %s differs with the "
			    "daemon stopped:\n%r\n%r" % (dom, queue_view(d, dom), view))
		with open(d.conf, "w") as f:
			f.write(edited)
		_, rows = stats_view(d)
		check(mode_of(rows, "c9.test") == ["relay"] and
		    mode_of(rows, "late.test") == ["hold"], "stopped: c9 %r, late %r"
		    % (mode_of(rows, "c9.test"), mode_of(rows, "late.test")))
		with open(d.conf, "w") as f:
			f.write(d.text)


# --- expiry reads only what is due ------------------------------------------

READS_N = 20000		# held messages built through the queue API
READS_DOMS = 10


def expiry_reads(mport):
	"""odrelay_expiry_envelopes_read_total by walk (queue, domain)."""
	import urllib.request
	with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport,
	    timeout=10) as r:
		text = r.read().decode()
	out = {"queue": 0, "domain": 0}
	for m in re.finditer(r'^odrelay_expiry_envelopes_read_total\{walk="(\w+)"\} (\d+)',
	    text, re.M):
		out[m.group(1)] = int(m.group(2))
	b = re.search(r"^odrelay_recipients_bounced_total (\d+)", text, re.M)
	out["bounced"] = int(b.group(1)) if b else 0
	return out


def queue_dom(d, dom):
	return json.loads(d.ctl_ok("queue", "--json", dom).out)


def wait_reads(mport, pred, what, timeout=20):
	deadline = time.time() + timeout
	r = None
	while time.time() < deadline:
		r = expiry_reads(mport)
		if pred(r):
			return r
		time.sleep(0.2)
	fail("%s: still %r after %d s" % (what, r, timeout))


def test_expiry_reads_only_due():
	"""One message due among 20,000 held: the walk reads it (and not the
	queue), returns it, reads nothing more at the next ticks; a reload
	that adds an age reads the queue once for it, and a restart goes on
	from the saved position instead of reading it again. Counts work
	(the metric), never time."""
	mport = free_port()
	doms = "".join("[domain d%d.test]\nhold = yes\n\n" % i
	    for i in range(READS_DOMS))
	doms += "[domain small.test]\nhold = yes\nqueue_lifetime = 3s\n"
	with Fixture("scale-reads", start=False, domains=doms,
	    extra="metrics_listen = 127.0.0.1:%d\nqueue_map_size = 1G\n"
	    "delay_warning = 1h\n" % mport) as d:
		# The small.test message first (the oldest), then READS_N
		# held ones: a walk in arrival order would read them all.
		r = subprocess.run([prog("bench/mkqueue"), d.queue_dir,
		    str(1 << 30), str(READS_N), str(READS_DOMS), "64", "1"],
		    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
		check(r.returncode == 0, "mkqueue: %s" % r.stdout.decode())
		if os.geteuid() == 0:
			pw = pwd.getpwnam("nobody")
			for top, dirs, files in os.walk(d.queue_dir):
				for x in [top] + [os.path.join(top, f) for f in files]:
					os.chown(x, pw.pw_uid, pw.pw_gid)
		d.start()
		got = wait_reads(mport, lambda r: r["bounced"] >= 1,
		    "small.test message returned")
		check(got["bounced"] == 1, "bounced %r" % got)
		# Read: the one due (its index), nothing of the queue.
		check(got["domain"] <= 2 and got["queue"] == 0,
		    "walk read %r for 1 message due among %d" % (got, READS_N))
		ms = json_messages(queue_dom(d, "small.test"))
		check(not ms, "small.test still queued: %r" % ms)
		dsn = json_messages(queue_dom(d, "client.test"))
		check(len(dsn) == 1 and dsn[0].get("sender") == "",
		    "one DSN to the sender expected: %r" % dsn)
		time.sleep(2.5)
		again = expiry_reads(mport)
		check(again["domain"] == got["domain"] and again["queue"] == 0,
		    "later ticks read more: %r then %r" % (got, again))

		# A new age (delay_warning 2s): its walk reads every message
		# once (held mail gets no notice), then saves where it is.
		with open(d.conf, "w") as f:
			f.write(d.text.replace("delay_warning = 1h", "delay_warning = 2s"))
		d.proc.send_signal(signal.SIGHUP)
		got = wait_reads(mport, lambda r: r["queue"] >= READS_N + 1,
		    "delay walk over the queue")
		time.sleep(2)
		again = expiry_reads(mport)
		check(again["queue"] <= READS_N + 1 + 2,
		    "delay walk read %r for %d messages" % (again, READS_N + 1))
		# Restart: the walk goes on from its saved position.
		d.stop()
		d.start()
		time.sleep(3)
		after = expiry_reads(mport)
		check(after["queue"] <= 2 and after["domain"] == 0,
		    "after a restart the walk read %r (position not kept?)"
		    % after)
		check(after["bounced"] == 0, "returned after restart: %r" % after)


LOWER_DOMAINS = """
[domain long.test]
hold = yes
queue_lifetime = 1h
"""


def test_expiry_lowered_at_reload():
	"""A reload that lowers a domain's lifetime to an age the walk has
	already passed (here: its override removed, the global 3s applies):
	its messages past the new lifetime are returned, not held forever."""
	with Fixture("scale-lower", domains=LOWER_DOMAINS,
	    extra="queue_lifetime = 3s\n") as d:
		res = send_many(d.smtp_port, "l@long.test", ["long"], 300)
		check(accepted(res) == ["long"], "long: %r" % res)
		# The 3s walk reads it (not yet due for long.test: 1h).
		time.sleep(5)
		check(any("l@long.test" in msg_rcpts(m)
		    for m in json_messages(d.queue_json())), "returned early")
		with open(d.conf, "w") as f:
			f.write(d.text.replace("queue_lifetime = 1h\n", ""))
		d.proc.send_signal(signal.SIGHUP)
		wait_queue(d, lambda j: not any("l@long.test" in msg_rcpts(m)
		    for m in json_messages(j)), "long.test returned after reload",
		    timeout=15)


if __name__ == "__main__":
	run_tests([test_early_refusals, test_expiry_among_many,
	    test_expiry_reads_only_due, test_expiry_lowered_at_reload, test_compact_live,
	    test_full_disk_atrn_twice, test_atrn_pieces,
	    test_ctl_daemon_and_file], "scale")
