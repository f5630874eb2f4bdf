"""A Docker-free stand-in for the Cloud Native Buildpacks lifecycle (Buildpack API 0.10), as the
spec (buildpacks/spec, buildpack.md) describes it, for the parts this buildpack relies on:

- detection: each buildpack's plan, its `[[or]]` alternatives, and the trials of a group
  ("a required buildpack requires a dependency that is not provided by the same buildpack or a
  previous buildpack" fails a trial, and so does a provided dependency that no later buildpack
  requires), tried left to right, depth first;
- the Buildpack Plan each buildpack's build receives (the entries named as it provides them);
- what heroku/release-phase does with its plan (src/setup_release_phase.rs and
  common/release_commands: every `[[requires.metadata.release]]` in plan order, then
  project.toml's `[[com.heroku.phase.release]]`);
- layers between builds (a cache layer restored with its `<layer>.toml` minus `[types]`; a
  launch-only layer's metadata restored without its contents) and in the exported image (launch
  layers only, and the app directory, every file's mtime set to 1980-01-01T00:00:01Z as the
  exporter's archive.NormalizingTarWriter sets it);
- the launch environment: each launch layer's `bin/` on PATH and `lib/` on LD_LIBRARY_PATH (later
  buildpacks first), then its `env/` and `env.launch/` files with the suffix rules.

The real buildpack's bin/detect and bin/build run as the lifecycle runs them, in the app
directory with the `CNB_*` variables; heroku/release-phase is simulated by its detect plan,
copied from its main.rs.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Plan = dict[str, object]
Entry = dict[str, object]
RELEASE_PHASE_ID = "heroku/release-phase"
# heroku/release-phase's detect: provides and requires `release-phase` (src/main.rs).
RELEASE_PHASE_PLAN: Plan = {
    "provides": [{"name": "release-phase"}],
    "requires": [{"name": "release-phase"}],
}


@dataclass(frozen=True)
class Alternative:
    """One potential Build Plan: a pairing of `provides` and `requires`."""

    provides: tuple[str, ...]
    requires: tuple[Entry, ...]


def alternatives(plan: Plan) -> list[Alternative]:
    """The top-level pairing, then each `[[or]]` one, in order."""
    tables: list[Mapping[str, object]] = [plan]
    extra = plan.get("or", [])
    assert isinstance(extra, list)
    tables.extend(extra)
    found = []
    for table in tables:
        provides = table.get("provides", [])
        requires = table.get("requires", [])
        assert isinstance(provides, list)
        assert isinstance(requires, list)
        found.append(
            Alternative(tuple(str(p["name"]) for p in provides), tuple(dict(r) for r in requires))
        )
    return found


@dataclass(frozen=True)
class Detected:
    """A buildpack that passed detection, with the plan it wrote."""

    id: str
    plan: Plan


@dataclass(frozen=True)
class Resolved:
    """The chosen trial of a group: one alternative per buildpack, in group order."""

    ids: tuple[str, ...]
    chosen: tuple[Alternative, ...]

    def buildpack_plan(self, buildpack_id: str) -> list[Entry]:
        """The entries a buildpack's build receives: every requirement of the group whose name
        it provides, in group order (as no build here writes `unmet`, for the first provider)."""
        index = self.ids.index(buildpack_id)
        names = set(self.chosen[index].provides)
        first_provider = {
            name: next(i for i, alt in enumerate(self.chosen) if name in alt.provides)
            for name in names
        }
        return [
            {"name": entry["name"], "metadata": entry.get("metadata", {})}
            for alternative in self.chosen
            for entry in alternative.requires
            if entry["name"] in names and first_provider[str(entry["name"])] == index
        ]


def _trial_passes(trial: Sequence[Alternative]) -> bool:
    for index, alternative in enumerate(trial):
        for entry in alternative.requires:
            if not any(entry["name"] in earlier.provides for earlier in trial[: index + 1]):
                return False
        for name in alternative.provides:
            later = trial[index:]
            if not any(name == entry["name"] for alt in later for entry in alt.requires):
                return False
    return True


def resolve(group: Sequence[Detected]) -> Resolved | None:
    """The first trial of `group` (every buildpack required) that passes, or None."""
    for trial in itertools.product(*(alternatives(d.plan) for d in group)):
        if _trial_passes(trial):
            return Resolved(tuple(d.id for d in group), tuple(trial))
    return None


def release_commands(entries: Sequence[Entry], project_toml: Path | None) -> list[list[str]]:
    """heroku/release-phase's release sequence: the plan's `release` arrays concatenated in
    entry order, then project.toml's `[[com.heroku.phase.release]]`; each as argv."""
    commands: list[Mapping[str, object]] = []
    for entry in entries:
        metadata = entry.get("metadata", {})
        assert isinstance(metadata, dict)
        commands.extend(metadata.get("release", []))
    if project_toml is not None and project_toml.is_file():
        project = tomllib.loads(project_toml.read_text())
        commands.extend(
            project.get("com", {}).get("heroku", {}).get("phase", {}).get("release", [])
        )
    argv = []
    for command in commands:
        args = command.get("args", [])
        assert isinstance(args, list)
        argv.append([str(command["command"]), *map(str, args)])
    return argv


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"no TOML for {value!r}")


def write_buildpack_plan(entries: Sequence[Entry], path: Path) -> None:
    """`<plan>` for a build: `[[entries]]` with name and metadata."""
    lines = []
    for entry in entries:
        lines += ["[[entries]]", f"name = {_toml_value(entry['name'])}"]
        lines.append(f"metadata = {_toml_value(entry.get('metadata', {}))}")
    path.write_text("\n".join(lines) + "\n")


LayerType = Literal["launch", "build", "cache"]


def layer_types(layers_dir: Path, name: str) -> set[LayerType]:
    """The `[types]` set to true in `<layers>/<name>.toml`."""
    metadata = layers_dir / f"{name}.toml"
    if not metadata.is_file():
        return set()
    types = tomllib.loads(metadata.read_text()).get("types", {})
    return {kind for kind in ("launch", "build", "cache") if types.get(kind) is True}


def layer_names(layers_dir: Path) -> list[str]:
    """The layers a build left (those with a `<layer>.toml`), alphabetically."""
    reserved = {"launch", "build", "store"}
    return sorted(p.stem for p in layers_dir.glob("*.toml") if p.stem not in reserved)


def restore_for_rebuild(layers_dir: Path) -> None:
    """What the next build finds: cached layers with their metadata minus `[types]`; launch-only
    layers' metadata minus `[types]`, without contents; nothing of the others."""
    for name in layer_names(layers_dir):
        types = layer_types(layers_dir, name)
        metadata = layers_dir / f"{name}.toml"
        if "cache" not in types:
            shutil.rmtree(layers_dir / name, ignore_errors=True)
        if not types & {"cache", "launch"}:
            metadata.unlink()
            continue
        table = tomllib.loads(metadata.read_text())
        table.pop("types", None)
        metadata.write_text(f"metadata = {_toml_value(table.get('metadata', {}))}\n")


# The mtime of every file in an exported image (lifecycle's archive.NormalizingTarWriter).
EXPORTED_MTIME = 315532801  # 1980-01-01T00:00:01Z


def _export_tree(source: Path, destination: Path) -> None:
    """Copy a folder into the image as the exporter writes a layer: every mtime normalised."""
    shutil.copytree(source, destination, symlinks=True)
    for path in [destination, *destination.rglob("*")]:
        os.utime(path, (EXPORTED_MTIME, EXPORTED_MTIME), follow_symlinks=False)


def export_app(app_dir: Path, image_app_dir: Path) -> None:
    """The app directory in the image, at the same path."""
    _export_tree(app_dir, image_app_dir)


def export_launch_layers(layers_dir: Path, image_layers_dir: Path) -> list[str]:
    """Copy the launch layers (contents and metadata) to the image, at the same path; their
    names."""
    exported = []
    for name in layer_names(layers_dir):
        if "launch" in layer_types(layers_dir, name) and (layers_dir / name).is_dir():
            image_layers_dir.mkdir(parents=True, exist_ok=True)
            _export_tree(layers_dir / name, image_layers_dir / name)
            shutil.copy2(layers_dir / f"{name}.toml", image_layers_dir / f"{name}.toml")
            exported.append(name)
    return exported


@dataclass
class LaunchEnvironment:
    """The environment a launched process gets, built as the lifecycle's launcher builds it."""

    env: dict[str, str]

    def _modify(self, name: str, how: str, value: str, delimiter: str) -> None:
        current = self.env.get(name, "")
        if how in ("override", ""):
            self.env[name] = value
        elif how == "default":
            if not current:
                self.env[name] = value
        elif how == "append":
            self.env[name] = f"{current}{delimiter}{value}" if current else value
        elif how == "prepend":
            self.env[name] = f"{value}{delimiter}{current}" if current else value
        else:
            raise ValueError(f"unknown suffix .{how}")

    def apply_env_dir(self, folder: Path) -> None:
        """One `env/` or `env.launch/` folder: name up to the first `.`, suffix the rule, the
        contents verbatim (never evaluated), `.delim` for this folder's concatenations."""
        if not folder.is_dir():
            return
        files = sorted(p for p in folder.iterdir() if p.is_file())
        delimiters = {p.name.split(".", 1)[0]: p.read_text() for p in files if p.suffix == ".delim"}
        for path in files:
            name, _, how = path.name.partition(".")
            if how == "delim":
                continue
            self._modify(name, how, path.read_text(), delimiters.get(name, ""))

    def add_layer(self, layer: Path, *, in_image: Path | None = None) -> None:
        """A launch layer: bin/ and lib/ first on PATH and LD_LIBRARY_PATH, then its env/ and
        env.launch/ (`in_image`: the layer's path where the process runs, when it differs)."""
        where = in_image if in_image is not None else layer
        if (layer / "bin").is_dir():
            self._modify("PATH", "prepend", str(where / "bin"), ":")
        if (layer / "lib").is_dir():
            self._modify("LD_LIBRARY_PATH", "prepend", str(where / "lib"), ":")
        self.apply_env_dir(layer / "env")
        self.apply_env_dir(layer / "env.launch")


def launch_environment(
    base: Mapping[str, str], buildpack_layers: Sequence[Path], image_root: Path | None = None
) -> dict[str, str]:
    """The launch environment over `base` for the buildpacks' layers folders, in group order.
    With `image_root`, the folders are host paths of an image whose `/` is `image_root`."""
    environment = LaunchEnvironment(dict(base))
    for layers_dir in buildpack_layers:
        for name in layer_names(layers_dir):
            if "launch" not in layer_types(layers_dir, name):
                continue
            layer = layers_dir / name
            in_image = Path("/") / layer.relative_to(image_root) if image_root else None
            environment.add_layer(layer, in_image=in_image)
    return environment.env


def cnb_build_env(
    *,
    layers_dir: Path,
    plan_path: Path,
    platform_dir: Path,
    buildpack_dir: Path,
    target: Mapping[str, str],
) -> dict[str, str]:
    """The `CNB_*` variables of a build."""
    return {
        "CNB_LAYERS_DIR": str(layers_dir),
        "CNB_BP_PLAN_PATH": str(plan_path),
        "CNB_PLATFORM_DIR": str(platform_dir),
        "CNB_BUILDPACK_DIR": str(buildpack_dir),
        **{f"CNB_TARGET_{key.upper()}": value for key, value in target.items()},
    }


def cnb_detect_env(*, plan_path: Path, platform_dir: Path, buildpack_dir: Path) -> dict[str, str]:
    """The `CNB_*` variables of a detect."""
    return {
        "CNB_BUILD_PLAN_PATH": str(plan_path),
        "CNB_PLATFORM_DIR": str(platform_dir),
        "CNB_BUILDPACK_DIR": str(buildpack_dir),
    }


def read_plan(path: Path) -> Plan:
    """A plan detect wrote (empty when it wrote none)."""
    return tomllib.loads(path.read_text()) if path.is_file() else {}
