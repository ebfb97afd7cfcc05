#!/bin/sh
# Quick start: install dependencies, build (out of tree, in ./build-demo, or
# in the top directory when the tree was already configured there, as
# README's "Building" does), and run odrelayd in the foreground on
# contrib/demo.conf (SMTP on 127.0.0.1:2525, ODMR on 127.0.0.1:3366, queue
# in ./demo-queue, held domain example.org routed to 127.0.0.1:2526 where
# contrib/smtp-sink.py prints what it receives, ATRN user demo/demo).
set -e
cd "$(dirname "$0")/.."
sh contrib/install-deps.sh
if [ -f config.status ]; then
	# An in-tree build exists: an out-of-tree configure would refuse.
	bindir=.
	make -j"$(nproc)" -s
else
	bindir=build-demo
	[ -x configure ] || autoreconf -fi
	mkdir -p build-demo
	(cd build-demo && { [ -f Makefile ] || ../configure -q; } &&
	    make -j"$(nproc)" -s)
fi
mkdir -p demo-queue
# git keeps no file modes but x: the password file must not be world-readable.
chmod 600 contrib/demo.passwd
echo "odrelayd: SMTP 127.0.0.1:2525, ODMR 127.0.0.1:3366 (user demo, password demo); Ctrl-C stops it"
echo "programs in $bindir/: $bindir/odrelayctl -c contrib/demo.conf queue, $bindir/odpull ..."
exec "$bindir/odrelayd" -f -c contrib/demo.conf
