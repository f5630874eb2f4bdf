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
