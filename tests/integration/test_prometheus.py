#!/usr/bin/env python3
"""Prometheus (issue 18 item 9): the alert rules in contrib/prometheus/ pass
`promtool check rules` and `promtool test rules`; a real Prometheus server,
started here on 127.0.0.1 in the foreground with its own configuration and
data directory, scrapes odrelayd, loads the rules, and the series read back
through its HTTP API match what the daemon did."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from odtest import (Fixture, check, fail, free_port, run, run_tests,
    send_message, srcdir)

RULES = os.path.join(srcdir(), "contrib", "prometheus")


def need(tool):
	if shutil.which(tool) is None:
		fail("%s not found (package prometheus; sh contrib/install-deps.sh)"
		    % tool)


def test_promtool_rules():
	need("promtool")
	r = run(["promtool", "check", "rules",
	    os.path.join(RULES, "odrelay-alerts.yml")], timeout=60)
	check(r.returncode == 0, "promtool check rules: exit %d\n%s"
	    % (r.returncode, r.out))
	# promtool resolves rule_files against the test file's directory.
	r = run(["promtool", "test", "rules",
	    os.path.join(RULES, "odrelay-alerts.test.yml")], timeout=120)
	check(r.returncode == 0 and "SUCCESS" in r.out,
	    "promtool test rules: exit %d\n%s" % (r.returncode, r.out))


def api(port, path, **params):
	url = "http://127.0.0.1:%d%s" % (port, path)
	if params:
		url += "?" + urllib.parse.urlencode(params)
	with urllib.request.urlopen(url, timeout=10) as r:
		return json.loads(r.read().decode())


class Prometheus:
	"""prometheus in the foreground, stopped by PID."""

	def __init__(self, d, metrics_port):
		need("prometheus")
		self.dir = os.path.join(d.dir, "prometheus")
		os.makedirs(os.path.join(self.dir, "data"))
		self.port = free_port()
		shutil.copy(os.path.join(RULES, "odrelay-alerts.yml"), self.dir)
		self.conf = os.path.join(self.dir, "prometheus.yml")
		with open(self.conf, "w") as f:
			f.write("global:\n  scrape_interval: 1s\n"
			    "  evaluation_interval: 1s\n"
			    "rule_files:\n  - odrelay-alerts.yml\n"
			    "scrape_configs:\n  - job_name: odrelay\n"
			    "    static_configs:\n"
			    "      - targets: ['127.0.0.1:%d']\n" % metrics_port)
		self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
		self.proc = subprocess.Popen(["prometheus",
		    "--config.file=" + self.conf,
		    "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
		    "--web.listen-address=127.0.0.1:%d" % self.port],
		    stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
		    cwd=self.dir)

	def log_text(self):
		with open(os.path.join(self.dir, "prometheus.log"), "rb") as f:
			return f.read().decode(errors="replace")[-3000:]

	def wait(self, what, pred, timeout=40):
		"""Poll pred() (None until true) while the server runs."""
		deadline = time.time() + timeout
		last = None
		while time.time() < deadline:
			if self.proc.poll() is not None:
				fail("prometheus exited with %s:\n%s" % (self.proc.returncode,
				    self.log_text()))
			try:
				last = pred()
				if last is not None:
					return last
			except OSError as e:
				last = e
			time.sleep(0.5)
		fail("prometheus: %s not seen within %d s (last: %r)\n%s"
		    % (what, timeout, last, self.log_text()))

	def query(self, q):
		j = api(self.port, "/api/v1/query", query=q)
		check(j.get("status") == "success", "query %s: %r" % (q, j))
		return j["data"]["result"]

	def stop(self):
		if self.proc.poll() is None:
			self.proc.send_signal(signal.SIGTERM)
			try:
				self.proc.wait(20)
			except subprocess.TimeoutExpired:
				self.proc.kill()
				self.proc.wait(5)
		self.log.close()


def test_prometheus_scrapes_odrelayd():
	mport = free_port()
	with Fixture("prom", extra="metrics_listen = 127.0.0.1:%d\n" % mport) as d:
		for i in range(2):
			code, text = send_message(d.smtp_port, "s@sender.test",
			    ["a@example.org"], "Subject: p%d\r\n\r\nbody\r\n" % i)
			check(code == 250, "message %d: %s %s" % (i, code, text))
		p = Prometheus(d, mport)
		try:
			def target_up():
				r = p.query('up{job="odrelay"}')
				return r if r and r[0]["value"][1] == "1" else None
			p.wait("target up", target_up)

			def received():
				r = p.query("odrelay_messages_received_total")
				return r if r and float(r[0]["value"][1]) == 2 else None
			r = p.wait("odrelay_messages_received_total == 2", received)
			check(r[0]["metric"].get("instance") == "127.0.0.1:%d" % mport,
			    "instance label: %r" % r[0]["metric"])

			def held():
				r = p.query('odrelay_queue_messages{domain="example.org"}')
				return r if r and float(r[0]["value"][1]) == 2 else None
			p.wait("two messages held for example.org", held)
			r = p.query('odrelay_queue_oldest_age_seconds{domain="example.org"}')
			check(r and float(r[0]["value"][1]) >= 0, "oldest age: %r" % r)
			r = p.query('odrelay_domain_last_atrn_timestamp_seconds'
			    '{domain="example.org"}')
			check(r and float(r[0]["value"][1]) == 0, "last ATRN: %r" % r)

			# The rules load in a real server and evaluate without error.
			def rules_ok():
				j = api(p.port, "/api/v1/rules")
				groups = {g["name"]: g for g in j["data"]["groups"]}
				if "odrelay" not in groups:
					return None
				bad = [x for x in groups["odrelay"]["rules"]
				    if x.get("health") not in ("ok", None) or
				    x.get("lastEvaluation", "").startswith("0001")]
				return groups if not bad else None
			p.wait("alert rules loaded and evaluated", rules_ok)
			r = p.query("ALERTS")
			check(r == [], "alerts firing on a healthy relay: %r" % r)
		finally:
			p.stop()


if __name__ == "__main__":
	run_tests([
		test_promtool_rules,
		test_prometheus_scrapes_odrelayd,
	], "prometheus")
