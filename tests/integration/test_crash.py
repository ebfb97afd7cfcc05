#!/usr/bin/env python3
"""Durability: SIGKILL under load loses no acknowledged message; SIGTERM
with sessions open exits 0 and keeps the queue."""

import base64
import os
import random
import re
import signal
import smtplib
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Conn, Fixture, check, fail, queued_id, run_tests,
    send_message)

N_CLIENTS = 20
PER_CONN = 10		# messages per SMTP connection
KILL_AT = (550, 550)	# acknowledged messages before each SIGKILL
PHASE_BOUND = 60.0	# seconds per phase at most

EXTRA = "max_connections_per_ip = 100\nmax_message_size = 1M\n"

MSGID_RE = re.compile(rb"^Message-ID: <([^>]+)>", re.M | re.I)


def make_message(rng, msgid):
	lines = [b"From: load@client.test", b"To: crash@example.org",
	    b"Subject: crash test " + msgid.encode(),
	    b"Message-ID: <" + msgid.encode() + b">", b""]
	for i in range(rng.randint(25, 90)):	# ~2-7 KB
		line = base64.b64encode(rng.getrandbits(57 * 8).to_bytes(57, "big"))
		r = rng.random()
		if r < 0.05:
			line = b"." + line		# dot-stuffing must round-trip
		elif r < 0.07:
			line = b"."
		elif r < 0.1:
			line = b""
		lines.append(line)
	return b"\r\n".join(lines) + b"\r\n"


class Load:
	"""N_CLIENTS threads sending until told to stop."""

	def __init__(self, port, phase):
		self.port = port
		self.phase = phase
		self.lock = threading.Lock()
		self.acked = {}		# qid -> (msgid, raw)
		self.attempted = {}	# msgid -> raw
		self.errors = []
		self.stop = threading.Event()
		self.threads = [threading.Thread(target=self.client, args=(i,),
		    daemon=True) for i in range(N_CLIENTS)]

	def start(self):
		for t in self.threads:
			t.start()

	def join(self, bound=15.0):
		self.stop.set()
		end = time.time() + bound
		for t in self.threads:
			t.join(max(0.1, end - time.time()))
		alive = [t for t in self.threads if t.is_alive()]
		check(not alive, "%d client threads hung" % len(alive))

	def count(self):
		with self.lock:
			return len(self.acked)

	def client(self, idx):
		rng = random.Random("%s-%d" % (self.phase, idx))
		n = 0
		while not self.stop.is_set():
			try:
				smtp = smtplib.SMTP("127.0.0.1", self.port,
				    local_hostname="load%d.client.test" % idx, timeout=20)
			except OSError:
				time.sleep(0.05)
				continue
			try:
				smtp.ehlo()
				for _ in range(PER_CONN):
					if self.stop.is_set():
						break
					msgid = "crash-%s-%d-%d@client.test" % (self.phase, idx, n)
					n += 1
					raw = make_message(rng, msgid)
					with self.lock:
						self.attempted[msgid] = raw
					code, _ = smtp.mail("load@client.test")
					if code != 250:
						raise smtplib.SMTPException("MAIL %d" % code)
					code, _ = smtp.rcpt("crash@example.org")
					if code != 250:
						raise smtplib.SMTPException("RCPT %d" % code)
					code, resp = smtp.data(raw)
					resp = resp.decode(errors="replace")
					if code == 250:
						qid = queued_id(resp)
						with self.lock:
							if qid is None or qid in self.acked:
								self.errors.append("bad/duplicate queue "
								    "id in %r" % resp)
							self.acked[qid] = (msgid, raw)
					else:
						raise smtplib.SMTPException("DATA %d %s" % (code, resp))
				try:
					smtp.quit()
				except (OSError, smtplib.SMTPException):
					pass
			except (OSError, smtplib.SMTPException) as e:
				# Expected around the SIGKILL; otherwise counted.
				with self.lock:
					self.errors.append("%s: %s" % (type(e).__name__, e))
				try:
					smtp.close()
				except OSError:
					pass
				time.sleep(0.02)


def run_phase(d, phase, kill_at):
	load = Load(d.smtp_port, phase)
	t0 = time.time()
	load.start()
	while load.count() < kill_at and time.time() - t0 < PHASE_BOUND:
		time.sleep(0.02)
	n = load.count()
	rc = d.kill()			# in the middle of the traffic
	load.join()
	elapsed = time.time() - t0
	print("phase %s: %d acknowledged, %d attempted in %.1fs (%.0f msg/s), "
	    "%d client errors, kill status %s" % (phase, len(load.acked),
	    len(load.attempted), elapsed, n / elapsed, len(load.errors), rc),
	    flush=True)
	check(n >= kill_at, "only %d messages acknowledged in %.0f s (wanted %d); "
	    "client errors: %s" % (n, PHASE_BOUND, kill_at, load.errors[:5]))
	return load


def stored_matches(stored, raw):
	"""stored = our Received header(s) + the exact message sent."""
	if stored.endswith(raw) and stored.startswith(b"Received:"):
		return True
	if b"\r\n" not in stored:	# odrelayctl printing LF endings
		return stored.endswith(raw.replace(b"\r\n", b"\n"))
	return False


def test_sigkill_under_load():
	with Fixture("crash", extra=EXTRA) as d:
		acked = {}
		attempted = {}
		for phase, kill_at in zip("ab", KILL_AT):
			if phase != "a":
				d.start()
			load = run_phase(d, phase, kill_at)
			acked.update(load.acked)
			attempted.update(load.attempted)
		check(len(attempted) >= 1000, "only %d messages sent" % len(attempted))
		d.start()
		ids = d.queue_ids()
		missing = sorted(set(acked) - ids)
		check(not missing, "%d acknowledged messages lost after SIGKILL, e.g. %s"
		    % (len(missing), missing[:10]))
		bad = []
		seen = {}
		for qid in sorted(ids):
			stored = d.body(qid)
			m = MSGID_RE.search(stored)
			if not m:
				bad.append("%s: no Message-ID in stored message %r"
				    % (qid, stored[:200]))
				continue
			msgid = m.group(1).decode()
			if msgid in seen:
				bad.append("%s: duplicate of %s (%s)" % (qid, seen[msgid], msgid))
			seen[msgid] = qid
			raw = attempted.get(msgid)
			if raw is None:
				bad.append("%s: unknown message %s" % (qid, msgid))
			elif qid in acked and acked[qid][0] != msgid:
				bad.append("%s: holds %s, acknowledged for %s" % (qid, msgid,
				    acked[qid][0]))
			elif not stored_matches(stored, raw):
				bad.append("%s (%s): stored bytes differ from sent (len %d vs "
				    "%d)" % (qid, msgid, len(stored), len(raw)))
			if len(bad) > 10:
				break
		check(not bad, "\n  ".join([""] + bad))
		print("verified %d queued messages (%d acknowledged, %d unacknowledged "
		    "but complete)" % (len(ids), len(acked), len(ids) - len(acked)))
		check(d.stop() == 0, "SIGTERM after verification: nonzero exit")


def test_sigterm_with_sessions():
	with Fixture("sigterm", extra=EXTRA) as d:
		kept = {}
		for i in range(3):
			raw = b"Subject: keep %d\r\nMessage-ID: <keep%d@client.test>\r\n\r\n" \
			    b"body %d\r\n.dot\r\n" % (i, i, i)
			code, t = send_message(d.smtp_port, "s@client.test",
			    ["keep%d@example.org" % i], raw)
			check(code == 250, "message %d: %s %r" % (i, code, t))
			kept[queued_id(t)] = raw
		idle = Conn(d.smtp_port)
		idle.greet_ehlo()
		mid = Conn(d.smtp_port)
		mid.greet_ehlo()
		mid.expect(250, "MAIL FROM:<mid@client.test>")
		mid.expect(250, "RCPT TO:<mid@example.org>")
		indata = Conn(d.smtp_port)
		indata.greet_ehlo()
		indata.expect(250, "MAIL FROM:<data@client.test>")
		indata.expect(250, "RCPT TO:<data@example.org>")
		indata.expect(354, "DATA")
		indata.send(b"Subject: unfinished\r\n\r\nhalf a message\r\n")
		time.sleep(0.2)
		d.proc.send_signal(signal.SIGTERM)
		time.sleep(0.3)
		# The unfinished message completes now: it must not be both
		# acknowledged and lost.
		late_ack = None
		try:
			indata.send(b"rest\r\n.\r\n")
			out = indata.pending(2.0)
			late_ack = queued_id(out.decode(errors="replace"))
		except OSError:
			pass
		t0 = time.time()
		rc = d.stop(bound=15.0)
		took = time.time() - t0
		check(rc == 0, "exit status after SIGTERM: %s" % rc)
		for name, c in (("idle", idle), ("mid-transaction", mid)):
			out = c.pending(0.5)
			check(b"421" in out or out == b"",
			    "%s session got %r, expected 421 or close" % (name, out))
		for c in (idle, mid, indata):
			c.close()
		print("SIGTERM: exit 0 after %.1fs" % took)
		d.start()
		ids = d.queue_ids()
		for qid, raw in kept.items():
			check(qid in ids, "message %s lost over SIGTERM" % qid)
			check(stored_matches(d.body(qid), raw), "message %s changed" % qid)
		if late_ack:
			check(late_ack in ids, "message %s acknowledged during shutdown "
			    "is lost" % late_ack)
			check(len(ids) == 4, "queue: %s" % sorted(ids))
		else:
			check(len(ids) == 3, "unacknowledged message was kept: %s"
			    % sorted(ids - set(kept)))


if __name__ == "__main__":
	run_tests([test_sigterm_with_sessions, test_sigkill_under_load], "crash")
