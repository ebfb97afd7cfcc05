#!/usr/bin/env python3
"""Command line: odrelayd -n / -V, odrelayctl usage errors."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import Daemon, check, prog, run, run_tests

# (config text appended to a valid config, 1-based line of the error
# relative to the appended text, description)
BAD = [
	("frobnicate = yes\n", 1, "unknown key"),
	("max_message_size = lots\n", 1, "bad size"),
	("\n# comment\nsmtp_timeout = 5 fortnights\n", 3, "bad duration"),
	("[domain example.org]\nhold = yes\n", 1, "duplicate domain section"),
	("[domain x.example]\nhold = perhaps\n", 2, "bad boolean"),
	("[domain y.example]\nbogus_domain_key = 1\n", 2, "unknown domain key"),
	("max_recipients = -3\n", 1, "negative number"),
]


def test_check_config():
	d = Daemon("cli")
	try:
		r = run([prog("odrelayd"), "-n", "-c", d.conf])
		check(r.returncode == 0, "-n on a valid config: exit %d\n%s\n%s"
		    % (r.returncode, r.out, d.text))
		base = d.text
		nbase = base.count("\n")
		if not base.endswith("\n"):
			nbase += 1
		bad = os.path.join(d.dir, "bad.conf")
		problems = []
		for extra, line, what in BAD:
			# Domain sections come last in the base config, so global
			# keys go before them: put them first instead.
			if extra.startswith("["):
				text = base + extra
				want = nbase + line
			else:
				text = extra + base
				want = line
			with open(bad, "w") as f:
				f.write(text)
			r = run([prog("odrelayd"), "-n", "-c", bad])
			if r.returncode != 2:
				problems.append("%s: exit %d (want 2): %s" % (what,
				    r.returncode, r.out.strip()))
			elif not re.search(re.escape(bad) + r":%d: \S" % want, r.out):
				problems.append("%s: output lacks %s:%d: ...: %r" % (what,
				    bad, want, r.out.strip()))
		r = run([prog("odrelayd"), "-n", "-c", os.path.join(d.dir, "missing.conf")])
		if r.returncode != 2:
			problems.append("missing config: exit %d (want 2)" % r.returncode)
		check(not problems, "\n  ".join([""] + problems))
	finally:
		d.cleanup(keep=False)


def test_version():
	r = run([prog("odrelayd"), "-V"])
	check(r.returncode == 0, "odrelayd -V: exit %d" % r.returncode)
	check(re.search(r"\d+\.\d+", r.out), "odrelayd -V prints no version: %r"
	    % r.out)


def test_ctl_usage():
	d = Daemon("ctlusage")
	try:
		for args in (["frobnicate"], ["show"], ["queue", "--bogus"]):
			r = d.ctl(*args)
			check(r.returncode == 2, "odrelayctl %s: exit %d (want 2 usage)"
			    % (" ".join(args), r.returncode))
	finally:
		d.cleanup(keep=False)


if __name__ == "__main__":
	run_tests([test_check_config, test_version, test_ctl_usage], "cli")
