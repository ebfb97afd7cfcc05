#!/bin/sh
# bench/postfix-teardown.sh - stop the bench Postfix instance and remove its
# directory (config, queue, log). Same as: sh bench/postfix-setup.sh teardown
exec sh "$(dirname "$0")/postfix-setup.sh" teardown
