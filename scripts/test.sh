#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. `.ci/run` calls this.
#
# With no arguments, in two passes: first the tests that do not play in real time, spread over
# the CPUs (pytest-xdist, a module's tests on one worker so its fixtures are made once), then the
# ones that play through JACK (-m midi) one at a time, alone on the machine: their timing is what
# they check. Both passes always run; the exit status is the first failure's. With arguments, one
# pytest run with them (e.g. -m "not slow", or a file).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
pytest=(.venv/bin/python -m pytest -q -ra)
if (($#)); then
    exec "${pytest[@]}" "$@"
fi
# the tiny trained run and bundle many tests read, made once for both passes (tests/fixtures_run.py)
PLAYBACH_TEST_SHARED=$(mktemp -d -t playbach-tests.XXXXXX)
export PLAYBACH_TEST_SHARED
trap 'rm -rf "$PLAYBACH_TEST_SHARED"' EXIT
workers=$(nproc)
((workers <= 4)) || workers=4   # each worker loads TensorFlow
status=0
"${pytest[@]}" -m "not midi" -n "$workers" --dist loadscope || status=$?
"${pytest[@]}" -m midi -p no:xdist || { rc=$?; ((status)) || status=$rc; }
exit "$status"
