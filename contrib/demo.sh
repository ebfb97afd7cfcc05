#!/bin/sh
# Quick start: install dependencies, build, and run odrelayd in the
# foreground on contrib/demo.conf (SMTP on 127.0.0.1:2525, ODMR on
# 127.0.0.1:3366, queue in ./demo-queue, held domain example.org).
set -e
cd "$(dirname "$0")/.."
sh contrib/install-deps.sh
[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure -q
make -j"$(nproc)" -s
mkdir -p demo-queue
exec ./odrelayd -f -c contrib/demo.conf
