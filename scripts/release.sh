#!/usr/bin/env bash
# Cut a release: scripts/release.sh VERSION (e.g. 0.3.0)
#
# Writes VERSION where it lives (lib/herokumigrate/__init__.py; buildpack.toml repeats it),
# moves CHANGELOG.md's [Unreleased] lines under a dated `## [VERSION] - YYYY-MM-DD` section,
# commits, and creates the annotated tag vVERSION. Users pin it with
#   heroku buildpacks:add https://github.com/heroku-buildpack-migrate/heroku-buildpack-migrate#vVERSION
# Nothing is pushed: `git push origin main vVERSION` publishes it.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { echo " !     $*" >&2; exit 2; }

version=${1:-}
[[ ${version} =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "usage: scripts/release.sh VERSION (three numbers, e.g. 0.3.0)"
tag="v${version}"
changes=$(git status --porcelain)
[[ -z ${changes} ]] || fail "the work tree has changes: commit or stash them first"
! git rev-parse -q --verify "refs/tags/${tag}" >/dev/null || fail "tag ${tag} exists already"
grep -q '^## \[Unreleased\]' CHANGELOG.md || fail "CHANGELOG.md has no '## [Unreleased]' section"
if ! awk '/^## \[Unreleased\]/ {on = 1; next} /^## / {on = 0} on && /^- / {found = 1} END {exit !found}' CHANGELOG.md; then
  fail "CHANGELOG.md's [Unreleased] section lists no change: nothing to release"
fi

current=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' lib/herokumigrate/__init__.py)
echo "-----> Releasing ${tag} (was ${current})"
sed -i "s/^__version__ = \".*\"$/__version__ = \"${version}\"/" lib/herokumigrate/__init__.py
sed -i "0,/^version = \".*\"$/s//version = \"${version}\"/" buildpack.toml

today=$(date -u +%Y-%m-%d)
awk -v heading="## [${version}] - ${today}" '
  /^## \[Unreleased\]/ && !done {print; print ""; print heading; done = 1; next}
  {print}
' CHANGELOG.md >CHANGELOG.md.new
mv CHANGELOG.md.new CHANGELOG.md

git add lib/herokumigrate/__init__.py buildpack.toml CHANGELOG.md
git commit -q -m "Release ${tag}"
git tag -a "${tag}" -m "heroku-buildpack-migrate ${version}"
echo "       Tagged ${tag}. Publish it with: git push origin main ${tag}"
