# shellcheck shell=bash
# Sourced by bin/detect, bin/compile and bin/release: strict mode, the one trap for unexpected
# failures, and how each entry point hands over to the Python steps.

set -Eeuo pipefail
shopt -s inherit_errexit

# The buildpack's own lib/ (this file lives in lib/herokumigrate/buildpack/).
BUILDPACK_LIB_DIR=$(cd "${BASH_SOURCE[0]%/*}/../.." && pwd)
readonly BUILDPACK_LIB_DIR

buildpack::internal_error() {
	local status=$1 command=$2 where=$3
	{
		echo " !     Internal error in heroku-buildpack-migrate (exit status ${status})."
		echo " !     Failing command: ${command}"
		echo " !     At: ${where}"
		echo " !     This is a bug in the buildpack, not in your app: please report it with the"
		echo " !     build output at https://github.com/heroku-buildpack-migrate/heroku-buildpack-migrate/issues"
	} >&2
}
trap 'buildpack::internal_error "$?" "${BASH_COMMAND}" "${BASH_SOURCE[0]}:${LINENO}"' ERR

# The build image's python3 runs the build steps. A buildpack that ran before this one may have
# put an app interpreter first on PATH (heroku/python exports its own); any python3 >= 3.10
# will do, so take the first one on PATH and fall back to the stack's. Prints nothing if none.
buildpack::find_python() {
	local candidate on_path
	on_path=$(command -v python3 || true)
	for candidate in "${on_path}" /usr/bin/python3; do
		if [[ -n "${candidate}" && -x "${candidate}" ]] &&
			"${candidate}" -E -s -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
			echo "${candidate}"
			return 0
		fi
	done
}

# Replace this shell with `python3 -m herokumigrate.buildpack STEP ARGS...`, importing the
# buildpack's own lib/ and nothing from the environment (-E -s; sys.path[0] is set explicitly so
# the app's files in the current directory cannot shadow a module).
buildpack::run_step() {
	local python
	python=$(buildpack::find_python)
	if [[ -z "${python}" ]]; then
		echo " !     heroku-buildpack-migrate needs python3 (3.10 or newer) at build time." >&2
		echo " !     The build image of every supported stack (heroku-22, heroku-24, heroku-26) has one;" >&2
		echo " !     use one of those stacks: heroku stack:set heroku-24" >&2
		exit 1
	fi
	trap - ERR
	exec "${python}" -E -s -c 'import sys; sys.path[0] = sys.argv.pop(1); from herokumigrate.buildpack.main import main; sys.exit(main(sys.argv[1:]))' \
		"${BUILDPACK_LIB_DIR}" "$@"
}

# bin/test (Heroku CI, when app.json sets no `test` script), with the app's config vars and
# .profile.d loaded: `heroku-migrate up` with the runner bin/test-compile installed, which tests
# that the migrations apply to the CI database from scratch. The runner brings its own Python, so
# nothing here needs the build image's. With no database attached, the files are checked alone.
buildpack::ci_test() {
	if [[ $# -ne 2 ]]; then
		echo " !     Usage: bin/test BUILD_DIR ENV_DIR" >&2
		exit 2
	fi
	local runner="$1/.heroku-migrate/bin/heroku-migrate" url_var=${MIGRATE_DATABASE_URL_VAR:-DATABASE_URL}
	if [[ ! -x "${runner}" ]]; then
		echo " !     heroku-migrate is not installed in $1: Heroku CI did not build with this buildpack." >&2
		echo " !     List it in app.json's buildpacks, after the app's language buildpack (docs/heroku-ci.md)." >&2
		exit 1
	fi
	trap - ERR
	# A name that is no variable's is left to the runner, which explains it.
	if [[ ! "${url_var}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ || -n "${!url_var:-}" ]]; then
		exec "${runner}" up
	fi
	echo "-----> No ${url_var} in this test run: checking the migration files without a database"
	echo "       (add \"heroku-postgresql:in-dyno\" to app.json's environments.test.addons to apply them)"
	exec "${runner}" validate
}
