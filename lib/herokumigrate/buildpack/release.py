"""bin/release: the release metadata the platform reads after compile.

Heroku reads only the *last* buildpack's `bin/release`, and "any process types defined from
earlier buildpacks will be ignored" (Dev Center, "Using Multiple Buildpacks for an App"). A
`default_process_types` key here could only replace other buildpacks' defaults, so we print none
and wire the release phase in the Procfile instead (the Procfile's entries are read from the
compiled slug whatever the buildpack order). `addons: []` asks for nothing; `config_vars` is
ignored by the platform, so it is left out too.
"""

from __future__ import annotations


def release_yaml() -> str:
    """The YAML document bin/release prints."""
    return "---\naddons: []\n"
