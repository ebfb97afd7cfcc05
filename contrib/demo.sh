#!/bin/sh
# Quick start: install dependencies, build (out of tree, in ./build-demo),
# and run odrelayd in the foreground on contrib/demo.conf (SMTP on
# 127.0.0.1:2525, ODMR on 127.0.0.1:3366, queue in ./demo-queue, held
# domain example.org, ATRN user demo/demo).
set -e
cd "$(dirname "$0")/.."
sh contrib/install-deps.sh
[ -x configure ] || autoreconf -fi
mkdir -p build-demo
cd build-demo
[ -f Makefile ] || ../configure -q
make -j"$(nproc)" -s
cd ..
mkdir -p demo-queue
echo "odrelayd: SMTP 127.0.0.1:2525, ODMR 127.0.0.1:3366 (user demo, password demo); Ctrl-C stops it"
exec ./build-demo/odrelayd -f -c contrib/demo.conf
