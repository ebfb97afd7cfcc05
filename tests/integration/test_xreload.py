#!/usr/bin/env python3
"""A configuration reload (SIGHUP) keeps the logged-in ODMR sessions whose
user the new password file still gives the same domains, all still
configured (XWAIT push customers do not all reconnect at every reload);
the others get 421 4.7.0 and log in again."""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import Conn, check, run_tests
from pullsink import (Sink, add_user, odmr_login, reverse_serve,
    sample_message, submit, wait_queue)
import test_push as tp


def reloaded(d, kept, ended, timeout=15.0):
	"""SIGHUP, then wait until the reload has judged kept + ended
	logged-in sessions (the daemon's counters, from the control socket)."""
	before = tp.stats(d)
	key = 'odrelay_odmr_reload_sessions_total{result="%s"}'
	k0, e0 = before.get(key % "kept", 0), before.get(key % "ended", 0)
	d.proc.send_signal(signal.SIGHUP)
	last = {}

	def done():
		last.update(tp.stats(d))
		return (last.get(key % "kept", 0) - k0 + last.get(key % "ended", 0)
		    - e0) >= kept + ended
	tp.wait_for(done, "reload judged %d sessions" % (kept + ended), timeout)
	got = (last.get(key % "kept", 0) - k0, last.get(key % "ended", 0) - e0)
	check(got == (kept, ended), "reload kept/ended %r, want %r\n%s" % (got,
	    (kept, ended), "\n".join(l for l in d.log_text().splitlines()
	    if "reload" in l)[-3000:]))


def expect_421(c, who):
	code, text = c.reply()
	check(code == 421 and "4.7.0" in text, "%s at SIGHUP: %s %r\n%s"
	    % (who, code, text, c.dump()))
	c.close()


def still_waiting(c, who):
	early = c.pending(0.5)
	check(early == b"", "%s answered after SIGHUP: %r" % (who, early))


def pull_one(d, c, sink, n, what):
	"""c waits: mail for it arrives, it is woken and pulls it."""
	submit(d.smtp_port, "s@client.test", ["user@example.org"],
	    sample_message(what))
	c.expect(250, what="%s woken after the reload" % what)
	c.expect(250, "ATRN")
	try:
		reverse_serve(c, sink)
	finally:
		c.close()
	check(len(sink.delivered()) == n, "sink got %d messages, want %d"
	    % (len(sink.delivered()), n))


def test_waiting_session_survives():
	"""Nothing changed: an XWAIT session, an idle logged-in one and one
	before AUTH all go on; the waiter is woken by mail that arrives after
	the reload and pulls it in the same session."""
	with tp.daemon("xreload-keep") as d, Sink() as sink:
		tp.users(d)
		w = tp.login(d)
		tp.start_wait(w)
		tp.wait_waiting(d, 1)
		idle = tp.login(d, "other", "other-secret")
		pre = Conn(d.odmr_port)
		pre.greet_ehlo("customer.test")
		try:
			reloaded(d, kept=2, ended=0)
			still_waiting(w, "XWAIT session")
			tp.wait_waiting(d, 1)
			idle.expect(250, "NOOP")
			# The idle session may still wait, under the new file.
			tp.start_wait(idle, "other.example")
			# Not logged in at the reload: AUTH works after it.
			c, code, text = odmr_login(0, "demo", "demo", conn=pre)
			check(code == 235, "AUTH after the reload: %s %r" % (code,
			    text))
			pre.expect(221, "QUIT")
			pull_one(d, w, sink, 1, "after-reload")
			# A second reload: the session that waits now is kept too.
			reloaded(d, kept=1, ended=0)
			still_waiting(idle, "second XWAIT session")
			idle.send("QUIT\r\n")
			idle.expect(453, what="wait ended by QUIT")
			idle.expect(221, what="QUIT")
			wait_queue(d, tp.queue_empty, "empty after the pull")
			check(d.running(), "odrelayd died")
		finally:
			for c in (w, idle, pre):
				c.close()


def test_user_removed_or_changed():
	"""passwd del before SIGHUP: that user's session gets 421 and cannot
	log in again; a user whose domains changed gets 421 too (it logs in
	again for the new list); another user's waiting session is kept and
	still woken."""
	with tp.daemon("xreload-user") as d, Sink() as sink:
		add_user(d, "keep", "keep-pw", "example.org")
		tp.users(d)
		gone = tp.login(d)
		tp.start_wait(gone)
		moved = tp.login(d, "other", "other-secret")
		tp.start_wait(moved)
		keep = tp.login(d, "keep", "keep-pw")
		tp.start_wait(keep)
		tp.wait_waiting(d, 2)
		try:
			r = d.ctl("passwd", "del", "demo")
			check(r.returncode == 0, "passwd del: %s %s" % (r.out, r.err))
			r = d.ctl("passwd", "del", "other")
			check(r.returncode == 0, "passwd del: %s %s" % (r.out, r.err))
			add_user(d, "other", "other-secret", "other.example",
			    "example.org")
			reloaded(d, kept=1, ended=2)
			expect_421(gone, "removed user's session")
			expect_421(moved, "session of a user whose domains changed")
			still_waiting(keep, "other user's XWAIT session")
			log = d.log_text()
			check("user=demo, session ended by reload (user removed)" in
			    log and "user=other, session ended by reload (user's "
			    "domains changed)" in log, "no reason logged:\n%s"
			    % "\n".join(l for l in log.splitlines() if "reload" in l))
			c, code, text = odmr_login(d.odmr_port, "demo", "demo")
			check(code == 535, "removed user logged in: %s %r" % (code,
			    text))
			c.close()
			pull_one(d, keep, sink, 1, "kept-user")
		finally:
			for c in (gone, moved, keep):
				c.close()


def test_domain_or_listener_removed():
	"""A domain section removed from the configuration: the sessions of
	users bound to it get 421, the others are kept; with odmr_listen
	emptied, the rest get 421 too."""
	with tp.daemon("xreload-domain") as d:
		tp.users(d)
		demo = tp.login(d)
		tp.start_wait(demo)
		other = tp.login(d, "other", "other-secret")
		tp.start_wait(other)
		tp.wait_waiting(d, 1)
		try:
			text = open(d.conf).read()
			cut = text.replace("[domain other.example]\nhold = yes\n", "")
			check(cut != text, "test setup: section not found")
			with open(d.conf, "w") as f:
				f.write(cut)
			reloaded(d, kept=1, ended=1)
			expect_421(other, "session bound to a removed domain")
			still_waiting(demo, "XWAIT session of a configured domain")
			check("session ended by reload (domain other.example no "
			    "longer configured)" in d.log_text(), "no reason logged")
			# The ODMR listener removed from the file.
			lines = ["odmr_listen =\n" if l.startswith("odmr_listen")
			    else l for l in cut.splitlines(True)]
			check("odmr_listen =\n" in lines, "test setup: no odmr_listen")
			with open(d.conf, "w") as f:
				f.write("".join(lines))
			reloaded(d, kept=0, ended=1)
			expect_421(demo, "session of a removed listener")
			check(d.running(), "odrelayd died")
		finally:
			for c in (demo, other):
				c.close()


def test_delivery_finishes():
	"""A session whose ATRN delivery is under way when its user is removed
	and SIGHUP comes is not interrupted: the mail it took is delivered and
	leaves the queue (as before); the user cannot log in afterwards."""
	with tp.daemon("xreload-atrn") as d, Sink() as sink:
		tp.users(d)
		submit(d.smtp_port, "s@client.test", ["user@example.org"],
		    sample_message("mid-delivery"))
		c = tp.login(d)
		try:
			c.expect(250, "ATRN")
			# The relay now waits for the customer's greeting.
			r = d.ctl("passwd", "del", "demo")
			check(r.returncode == 0, "passwd del: %s %s" % (r.out, r.err))
			start = len(d.log_text())
			d.proc.send_signal(signal.SIGHUP)
			tp.wait_for(lambda: "reload: configuration" in
			    d.log_text()[start:], "reload logged")
			reverse_serve(c, sink)
		finally:
			c.close()
		check(len(sink.delivered()) == 1, "sink got %d messages"
		    % len(sink.delivered()))
		wait_queue(d, tp.queue_empty, "empty after the delivery")
		c, code, text = odmr_login(d.odmr_port, "demo", "demo")
		check(code == 535, "removed user logged in: %s %r" % (code, text))
		c.close()


TESTS = [
	test_waiting_session_survives,
	test_user_removed_or_changed,
	test_domain_or_listener_removed,
	test_delivery_finishes,
]

if __name__ == "__main__":
	run_tests(TESTS, "xreload")
