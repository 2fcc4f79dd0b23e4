#!/usr/bin/env bash
# Regenerate constraints.txt: a resolved set of every dependency that is known to pass.
#
# A fresh virtual environment in /tmp, the README's install (torch first, then the project
# with its test extra), a fast part of the test suite in it, then `pip freeze` less the
# project itself. Local version labels
# (torch's "+cpu") are dropped so the pins also match PyPI's wheels. Re-runnable: run it again
# whenever pyproject.toml's dependencies or extras change, run the tests with the new file,
# and commit it. Usage: bash tools/make_constraints.sh [PYTHON]   (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${1:-python3}
VENV=$(mktemp -d /tmp/scai-constraints.XXXXXX)
trap 'rm -rf "$VENV"' EXIT

"$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q torch==2.13.0
$PIP install -q -e ".[test]"

# Known to pass: run a fast part of the suite in that environment before writing anything
# (SCAI_CONSTRAINTS_TESTS="" skips it; the full suite runs in CI from the file).
TESTS=${SCAI_CONSTRAINTS_TESTS-tests/test_io_errors.py tests/test_io_write.py tests/test_cli.py tests/test_napari_plugin.py}
if [ -n "$TESTS" ]; then
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pytest -q -x -p no:cacheprovider $TESTS \
    || { echo "tests failed in the new resolve: constraints.txt left as it was" >&2; exit 1; }
fi

{
  echo "# Resolved set known to pass, written by tools/make_constraints.sh (do not edit by hand)."
  echo "# $("$VENV/bin/python" -V), $(uname -m), $(date -u +%Y-%m-%d)."
  echo "# Use: pip install torch==2.13.0 && pip install -e \".[test]\" -c constraints.txt"
  $PIP freeze --exclude-editable --all \
    | grep -v -i -E '^(napari[-_]scai|pip|setuptools|wheel)([=@ ]|$)' \
    | sed -E 's/^([A-Za-z0-9_.-]+==[^+ ]+)\+[A-Za-z0-9.]+$/\1/' \
    | LC_ALL=C sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
