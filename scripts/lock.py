"""The locks of exact versions under requirements/: what every install of the project takes.

`make lock` (`python scripts/lock.py`) resolves pyproject.toml's dependencies with pip-tools and writes
one lock per kind of install, each a requirements file of `name==version` lines (transitive
dependencies included, torch's own too):

- `requirements/service.txt`: the service and the training job (`make serve`, the Docker image);
- `requirements/dev.txt`: that plus every extra (`make test`, CI, `make bench`, `make lint`);
- `requirements/load.txt`: that plus the load-test extra (`make loadtest`, the load-test image).

torch itself is not in a lock: it is installed first, pinned by `requirements/torch.txt` (the CPU build
from the PyTorch CPU index or a local wheel, a CUDA build from a CUDA index), with the lock as the
constraints that pin its dependencies. The service and load locks are resolved within the dev lock, so one
package has one version in all three. Each lock's first lines record a digest of pyproject.toml's
dependency tables; `check` (run by the test suite) fails when pyproject.toml changed without a new
lock, or when a lock does not satisfy what pyproject.toml asks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
LOCK_DIR = REPO / "requirements"
TORCH_PIN = LOCK_DIR / "torch.txt"  # `torch==VERSION`: the one place torch's version is written
PIP_TOOLS = "pip-tools==7.7.0"
# lock name -> the extras it installs beside the service's own dependencies
LOCKS: dict[str, tuple[str, ...]] = {
    "dev": ("test", "lint", "load", "bench"),  # first: the others are resolved within it
    "service": (),
    "load": ("load",),
}
_DIGEST_LINE = "# pyproject.toml dependency digest: "


def dependency_digest(pyproject: Path = PYPROJECT) -> str:
    """sha256 of the dependency tables of pyproject.toml (build requires, dependencies, extras)."""
    data = tomllib.loads(pyproject.read_text())
    tables = {
        "build": data["build-system"]["requires"],
        "dependencies": data["project"]["dependencies"],
        "extras": data["project"].get("optional-dependencies", {}),
    }
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


def requirements_of(lock: str, pyproject: Path = PYPROJECT) -> list[Requirement]:
    """What pyproject.toml asks of a lock: the dependencies and those of the lock's extras."""
    from packaging.requirements import Requirement  # (pip-tools' venv has it when this runs in `make lock`)

    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in LOCKS[lock]:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def pins(path: Path) -> dict[str, str]:
    """The `name==version` lines of a lock, by canonical name."""
    from packaging.utils import canonicalize_name

    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = version.strip()
    return found


def check(lock_dir: Path = LOCK_DIR, pyproject: Path = PYPROJECT) -> list[str]:
    """Why the locks disagree with pyproject.toml (empty when they agree)."""
    from packaging.utils import canonicalize_name

    problems = []
    digest = dependency_digest(pyproject)
    for lock in LOCKS:
        path = lock_dir / f"{lock}.txt"
        if not path.is_file():
            problems.append(f"{path.name} is missing")
            continue
        if f"{_DIGEST_LINE}{digest}" not in path.read_text():
            problems.append(f"{path.name} was locked from other pyproject.toml dependencies")
        pinned = pins(path)
        for requirement in requirements_of(lock, pyproject):
            name = canonicalize_name(requirement.name)
            if name == "torch":
                continue  # installed on its own, pinned (see the module docstring)
            version = pinned.get(name)
            if version is None:
                problems.append(f"{path.name} has no pin for {requirement}")
            elif not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{path.name} pins {name}=={version}, outside {requirement}")
    return problems


def _compile(tool: Path, lock: str, out: Path, constraints: list[Path], upgrade: bool) -> None:
    args = [
        str(tool),
        "--quiet",
        "--no-header",
        "--strip-extras",
        "--no-emit-index-url",
        "--annotation-style=line",
    ]
    args += [
        "--no-emit-find-links",
        "--unsafe-package",
        "torch",
        "--all-build-deps",
        "--output-file",
        str(out),
    ]
    args += ["--upgrade"] if upgrade else []
    args += [arg for extra in LOCKS[lock] for arg in ("--extra", extra)]
    args += [arg for path in constraints for arg in ("--constraint", str(path.relative_to(REPO)))]
    subprocess.run([*args, PYPROJECT.name], check=True, cwd=REPO)
    body = out.read_text()
    header = (
        f"# The {lock} lock: exact versions for `pip install --no-deps -r requirements/{lock}.txt`.\n"
        f"# Made by `make lock` from pyproject.toml; do not edit by hand. torch is installed on its\n"
        f"# own (requirements/torch.txt), constrained by this file.\n"
        f"{_DIGEST_LINE}{dependency_digest()}\n\n"
    )
    out.write_text(header + body)


def main(argv: list[str] | None = None) -> None:
    """Resolve and write every lock (needs the package index; takes a minute or two). Versions already
    locked are kept unless pyproject.toml rules them out, or `--upgrade` asks for the newest."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--upgrade", action="store_true", help="the newest versions pyproject.toml allows")
    parser.add_argument("--check", action="store_true", help="only check the locks against pyproject.toml")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        sys.exit("the locks disagree with pyproject.toml: " + "; ".join(problems) if problems else 0)
    with tempfile.TemporaryDirectory(prefix="cvae-lock-") as tmp:
        env = Path(tmp) / "venv"
        venv.create(env, with_pip=True)
        subprocess.run([str(env / "bin" / "pip"), "install", "--quiet", PIP_TOOLS], check=True)
        tool = env / "bin" / "pip-compile"
        LOCK_DIR.mkdir(exist_ok=True)
        dev = LOCK_DIR / "dev.txt"
        for lock in LOCKS:
            print(f"==> requirements/{lock}.txt", flush=True)
            constraints = [TORCH_PIN] + ([dev] if lock != "dev" else [])
            _compile(tool, lock, LOCK_DIR / f"{lock}.txt", constraints, args.upgrade and lock == "dev")
        subprocess.run([str(env / "bin" / "python"), __file__, "--check"], check=True)


if __name__ == "__main__":
    main()
