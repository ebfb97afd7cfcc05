#!/usr/bin/env python3
"""Regressions found in review: expiry and delay notice in one scan, a full
queue that must drain without resending, notices to a held subdomain."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Failure, Fixture, check, free_port, json_find,
    json_messages, queued_id, run_tests, send_message)
from pullsink import Sink


def test_expiry_and_delay_in_one_scan():
	"""A recipient that expires in the scan that also owes it a delay
	notice is returned once and stays returned."""
	doms = ("[domain example.org]\nhold = yes\n\n[domain backup.test]\n"
	    "hold = no\nroute = 127.0.0.1:%d\nqueue_lifetime = 3s\n" % free_port())
	with Fixture("reg-expiry", extra="delay_warning = 3s\nretry_min = 1h\n"
	    "retry_max = 2h\n", domains=doms) as d:
		code, text = send_message(d.smtp_port, "s@sender.test",
		    ["a@backup.test", "b@example.org"], "Subject: t\r\n\r\nhello\r\n")
		check(code == 250, text)
		qid = queued_id(text)
		time.sleep(9)
		log = d.log_text()
		nb = sum(1 for l in log.splitlines()
		    if "to=<a@backup.test>, status=bounced" in l)
		check(nb == 1, "a@backup.test returned %d times" % nb)
		m = json_find(d.queue_json(), qid)
		check(m is not None, "held recipient b@example.org lost")
		states = {r["address"]: r["state"] for r in m["recipients"]}
		check(states.get("a@backup.test") != "queued",
		    "returned recipient revived: %r" % states)


def test_full_queue_drains_without_resending():
	"""New mail stops before the map is full, so every delivery can be
	recorded: two flushes deliver each message exactly once."""
	sink = Sink().start()
	try:
		doms = "[domain example.org]\nhold = yes\nroute = 127.0.0.1:%d\n" % sink.port
		with Fixture("reg-full", extra="queue_map_size = 1M\n", domains=doms) as d:
			body = "Subject: fill\r\n\r\n" + ("x" * 70 + "\r\n") * 300
			n = 0
			for _ in range(200):
				try:
					code, text = send_message(d.smtp_port, "s@sender.test",
					    ["b@example.org"], body)
				except Failure:
					break
				if code != 250:
					check(code == 452 and "4.3.1" in text,
					    "full queue answered %s %s" % (code, text))
					break
				n += 1
			check(n > 0, "nothing accepted")
			for _ in range(2):
				d.ctl("flush", "example.org")
				time.sleep(4)
			got = len(sink.delivered())
			check(got == n, "sink got %d deliveries for %d messages" % (got, n))
			check(not d.queue_ids(), "queue not empty after the flushes")
	finally:
		sink.stop()


def test_notice_to_held_subdomain_sender():
	"""A notice for a sender under a held subdomains = yes domain is held
	under that domain, so ETRN/flush/ATRN for it find the notice."""
	sink = Sink(rcpt_reply=lambda a: "550 5.1.1 no such user").start()
	try:
		doms = ("[domain example.org]\nhold = yes\nsubdomains = yes\n\n"
		    "[domain backup.test]\nhold = no\nroute = 127.0.0.1:%d\n" % sink.port)
		with Fixture("reg-bsub", domains=doms) as d:
			code, text = send_message(d.smtp_port, "s@sub.example.org",
			    ["a@backup.test"], "Subject: t\r\n\r\nhi\r\n")
			check(code == 250, text)
			time.sleep(4)
			notices = [m for m in json_messages(d.queue_json())
			    if m.get("sender") in ("", "<>", None)]
			check(len(notices) == 1, "want one notice, queue: %r"
			    % json_messages(d.queue_json()))
			r = notices[0]["recipients"][0]
			check(r["address"] == "s@sub.example.org" and
			    r["domain"] == "example.org", "notice recipient %r" % r)
			# flush takes ETRN's forms: the domain itself has no mail,
			# @example.org (and the subdomain itself) find the notice
			out = d.ctl("flush", "example.org").out
			check(out.startswith("251"), "flush example.org: %r" % out)
			out = d.ctl("flush", "@example.org").out
			check(out.startswith("253"), "flush @example.org: %r" % out)
	finally:
		sink.stop()


def test_delay_notice_once():
	"""delay_warning: a backup-MX message still undelivered after it gets
	one "delayed" notice (RFC 3464 Action: delayed) and stays queued."""
	sink = Sink().start()
	try:
		doms = ("[domain backup.test]\nhold = no\nroute = 127.0.0.1:%d\n\n"
		    "[domain sender.test]\nhold = no\nroute = 127.0.0.1:%d\n"
		    % (free_port(), sink.port))
		with Fixture("reg-delay", extra="delay_warning = 2s\nretry_min = 1h\n"
		    "retry_max = 2h\n", domains=doms) as d:
			code, text = send_message(d.smtp_port, "s@sender.test",
			    ["a@backup.test"], "Subject: slow\r\n\r\nhello\r\n")
			check(code == 250, text)
			qid = queued_id(text)
			time.sleep(8)
			got = sink.delivered()
			check(len(got) == 1, "want one delay notice, sink got %d" % len(got))
			txn, rcpts = got[0]
			data = txn.data.decode("latin-1")
			check(rcpts == ["s@sender.test"], "notice went to %r" % rcpts)
			check("report-type=delivery-status" in data and
			    "Action: delayed" in data and "a@backup.test" in data,
			    "not a delay notice:\n" + data[:2000])
			check(json_find(d.queue_json(), qid) is not None,
			    "the delayed message left the queue")
	finally:
		sink.stop()


if __name__ == "__main__":
	run_tests([test_expiry_and_delay_in_one_scan,
	    test_full_queue_drains_without_resending,
	    test_notice_to_held_subdomain_sender, test_delay_notice_once],
	    "regress")
