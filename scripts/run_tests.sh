#!/usr/bin/env bash
# `make test`'s pytest run. A test stuck inside a DDS entity's deletion (Fast DDS can block there
# with the GIL held: pytest-timeout cannot end it) is reported by the watchdog (tests/watchdog.py), which
# kills the run; the tests that the run did not finish then run once more, so one such hang does not cost
# the whole suite. Any failed test, a second hang, or a hang anywhere else fails the run.
set -uo pipefail
PY=${PY:-.venv/bin/python}
progress=$(mktemp -t racestack-progress-XXXXXX)
trap 'rm -f "$progress" "$progress.first"' EXIT

RACESTACK_TEST_PROGRESS=$progress "$PY" -m pytest "$@"
status=$?
if [ "$status" -ne 0 ] && grep -q '^stuck-in-dds-deletion ' "$progress" && ! grep -q '^failed ' "$progress"; then
    stuck=$(grep '^stuck-in-dds-deletion ' "$progress" | head -1 | cut -d' ' -f2-)
    finished=$(grep -c '^done ' "$progress")
    echo "racestack: the run was stuck in a DDS entity's deletion in $stuck (stacks above);" \
         "running the tests after the $finished it finished once more" >&2
    mv "$progress" "$progress.first"
    RACESTACK_TEST_PROGRESS=$progress RACESTACK_TEST_RESUME=$progress.first "$PY" -m pytest "$@"
    status=$?
fi
exit "$status"
