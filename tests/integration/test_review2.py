#!/usr/bin/env python3
"""Review of privilege separation (issue 14), the operator's first hour
(issue 18) and the hostile-peer fixes (issue 17) as a hostile peer, a
compromised session process and a careful operator would attack them.
Each test here failed on the tree before its fix."""

import os
import re
import shutil
import subprocess
import tempfile
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Fixture, Skip, check, fail, free_port, run_tests,
    send_message)


def scrape(port):
	with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
	    timeout=10) as r:
		return r.read().decode()


def series_keys(body):
	"""The name{labels} part of every sample line."""
	keys = []
	for line in body.splitlines():
		if line.startswith("#") or not line.strip():
			continue
		keys.append(line.rsplit(" ", 1)[0])
	return keys


def promtool_check(body):
	if shutil.which("promtool") is None:
		return None
	r = subprocess.run(["promtool", "check", "metrics"], input=body.encode(),
	    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
	return r.returncode, r.stdout.decode(errors="replace")


def test_metrics_hostile_labels():
	"""A milter socket path with a quote and a backslash, long enough
	(over 63 octets) that its label was cut: the label was written
	unescaped (a broken exposition), and the cut label never matched
	itself again, so every failure added one more series with the same
	labels (until 24, then "other")."""
	mport = free_port()
	sdir = tempfile.mkdtemp(prefix="r2m-")
	sockpath = os.path.join(sdir, 'mil"ter\\x' + "p" * 50)
	check(64 < len("unix:" + sockpath) < 100, "socket path length")
	extra = ("metrics_listen = 127.0.0.1:%d\nmilters = unix:%s\n"
	    "milter_default_action = accept\n" % (mport, sockpath))
	with Fixture("review2-metrics", extra=extra) as d:
		for i in range(3):
			code, text = send_message(d.smtp_port, "s@client.test",
			    ["x@example.org"],
			    "Subject: %d\r\n\r\nbody\r\n" % i)
			check(code == 250, "message %d: %d %s" % (i, code, text))
		body = scrape(mport)
		lines = [l for l in body.splitlines()
		    if l.startswith("odrelay_milter_failures_total")]
		check(len(lines) == 1, "one series for the milter's failures "
		    "expected:\n%s" % "\n".join(lines))
		esc = sockpath.replace("\\", "\\\\").replace('"', '\\"')
		check(('milter="unix:%s"' % esc) in lines[0],
		    "label not escaped or cut: %s" % lines[0])
		check(lines[0].endswith(" 3"), "3 failures expected: %s" % lines[0])
		keys = series_keys(body)
		dup = sorted(set(k for k in keys if keys.count(k) > 1))
		check(not dup, "duplicate series: %s" % dup[:5])
		pc = promtool_check(body)
		if pc is not None:
			# promtool's lint warnings (e.g. counter names) exit 3;
			# a parse error exits 1.
			check(pc[0] != 1 and "error while linting" not in pc[1],
			    "promtool check metrics: %s" % pc[1][:2000])
	shutil.rmtree(sdir, ignore_errors=True)


run_tests([test_metrics_hostile_labels], "review2")
