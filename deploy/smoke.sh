#!/bin/sh
# Demo smoke test for shipmate's `verify` command check: a real one would call the new version.
# It gets the same SHIPMATE_* variables as the deploy script; exit 0 passes, anything else fails.
set -eu
echo "smoke-testing $SHIPMATE_SERVICE $SHIPMATE_VERSION in $SHIPMATE_ENVIRONMENT at $SHIPMATE_WEIGHT%"
