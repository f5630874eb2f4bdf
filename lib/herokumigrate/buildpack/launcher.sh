#!/usr/bin/env bash
# heroku-migrate: the migration runner installed by heroku-buildpack-migrate.
# Runs `python -m herokumigrate "$@"` with the Python recorded at build time in
# .heroku-migrate/interpreter. Every path is found from this file's own location when it runs, so
# the app can move (the build happens in /tmp/build_*, the dyno runs it from /app).
set -euo pipefail

self=${BASH_SOURCE[0]}
if [[ -L "${self}" ]]; then
	self=$(readlink -f "${self}")
fi
if [[ "${self}" != /* ]]; then
	self=${PWD}/${self}
fi
# The Procfile runs ./.heroku-migrate/bin/heroku-migrate: drop the `/./` (no subshell for a cd).
self=${self//\/.\//\/}
home=${self%/*}
home=${home%/*}
app=${home%/*}

kind="" python="" library_path="" app_root=""
while IFS='=' read -r key value; do
	case "${key}" in
	kind) kind=${value} ;;
	python) python=${value} ;;
	library_path) library_path=${value} ;;
	app_root) app_root=${value} ;; # the CNB: the runner is in a layer, the app elsewhere
	*) ;;
	esac
done <"${home}/interpreter"
if [[ "${python}" != /* ]]; then
	python=${app}/${python}
fi

if [[ ! -x "${python}" ]]; then
	case "${kind}" in
	app) why="the app's Python (installed by heroku/python) is gone" ;;
	stack) why="the stack no longer provides it (did the app change stacks?)" ;;
	*) why="the slug is incomplete" ;;
	esac
	{
		echo " !     heroku-migrate: cannot run: ${python#"${app}/"} is missing: ${why}."
		echo " !     The build chose this interpreter; rebuild the app so it chooses again:"
		echo " !     git commit --allow-empty -m 'Rebuild' && git push heroku main"
	} >&2
	exit 2
fi

if [[ -n "${library_path}" ]]; then
	export LD_LIBRARY_PATH="${app}/${library_path}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
fi
# Relative settings (the migrations folder, migrate.toml) are resolved against the app, wherever
# the command is run from (`cd db && heroku-migrate status`).
export HEROKU_MIGRATE_APP_ROOT="${app_root:-${app}}"
if [[ -f "${home}/manifest.json" ]]; then
	# What the build validated: lets a release with nothing pending skip reading every file.
	export HEROKU_MIGRATE_MANIFEST="${home}/manifest.json"
fi
# Isolated from the app's Python: every PYTHON* variable is unset (the app's PYTHONPATH and
# PYTHONHOME, PYTHONINSPECT, PYTHONVERBOSE, ...: even with -I, CPython still reads
# PYTHONEXECUTABLE to find its own files), and -I ignores them anyway, with the user's
# site-packages and the current directory, so an app file cannot shadow a module; -S skips
# site-packages too. Only the runner and its pinned dependencies are importable: their folders,
# passed as the first two arguments, go first on sys.path. The entry point is imported directly
# (not through runpy, whose import costs a no-op release ~3 ms).
unset "${!PYTHON@}"
exec "${python}" -I -S -c 'import sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]; from herokumigrate.cli import main; sys.exit(main())' \
	"${home}/lib" "${home}/site" "$@"
