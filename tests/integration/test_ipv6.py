#!/usr/bin/env python3
"""IPv6: a listener on [::1]:PORT accepts mail (skipped without ::1)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Fixture, Skip, check, have_ipv6_loopback, queued_id,
    run_tests, send_message)


def test_ipv6_listener():
	if not have_ipv6_loopback():
		raise Skip("::1 is not available")
	with Fixture("ipv6", ipv6=True) as d:
		code, t = send_message(d.smtp6_port, "v6@client.test", ["v6@example.org"],
		    b"Subject: over ipv6\r\n\r\nhello\r\n", host="::1")
		check(code == 250, "DATA over [::1]: %s %r" % (code, t))
		qid = queued_id(t)
		s = d.ctl_ok("show", qid)
		check("::1" in s.out, "Received header lacks the client address ::1:\n"
		    + s.out)
		# The IPv4 listener of the same daemon still works.
		code, t = send_message(d.smtp_port, "v4@client.test", ["v4@example.org"],
		    b"Subject: over ipv4\r\n\r\nhello\r\n")
		check(code == 250, "DATA over 127.0.0.1: %s %r" % (code, t))
		check(d.stop() == 0, "SIGTERM: nonzero exit")


if __name__ == "__main__":
	run_tests([test_ipv6_listener], "ipv6")
