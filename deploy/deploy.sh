#!/bin/sh
# Demo deploy script for shipmate's `command` backend. A real one would call your deploy tool;
# everything it prints is progress, exit 0 is success, anything else is failure.
set -eu
echo "deploying $SHIPMATE_SERVICE $SHIPMATE_VERSION to $SHIPMATE_ENVIRONMENT (promotion #$SHIPMATE_PROMOTION_ID, requested by $SHIPMATE_REQUESTED_BY)"
if [ -n "$SHIPMATE_PREVIOUS_VERSION" ]; then
  echo "replacing $SHIPMATE_PREVIOUS_VERSION (rollback: $SHIPMATE_ROLLBACK)"
fi
for step in "pulling image" "running migrations" "rolling out 3/3 pods" "health checks passing"; do
  sleep 0.5
  echo "$step"
done
echo "done: $SHIPMATE_SERVICE $SHIPMATE_VERSION is live in $SHIPMATE_ENVIRONMENT"
