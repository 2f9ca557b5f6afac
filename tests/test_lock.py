"""One installation everywhere: the lock (constraints.txt) pins every package exactly, and
make setup, the rules' conda envs (envs/) and pyproject.toml agree with it."""
import importlib.util
import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO

spec = importlib.util.spec_from_file_location("lock_envs", REPO / "tools" / "lock_envs.py")
lock_envs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock_envs)

LOCK = {canonicalize_name(name): version for name, version in lock_envs.read_lock().items()}
BASE = {canonicalize_name(name): version for name, version in lock_envs.read_lock(verl=False).items()}
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def pins_of(lines, where):
    pins = {}
    for line in lines:
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one `==`, no range
        assert spec.operator == "==" and not req.url, f"{where}: {line!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_the_lock_pins_every_package_exactly_torch_and_evalplus_included():
    assert LOCK["torch"] == "2.13.0" and LOCK["evalplus"] == "0.3.1" and LOCK["verl"] == "0.9.1"
    # The [verl] section only adds packages: the suite's own versions are the same with or without it.
    assert BASE == {name: v for name, v in LOCK.items() if name in BASE} and "verl" not in BASE
    assert LOCK["antlr4-python3-runtime"].startswith("4.9.") and LOCK["transformers"] == "5.10.4"  # hydra's; the suite's
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.]*", v) for v in LOCK.values())  # no +cpu: one lock, any build


def test_every_env_file_pins_exactly_the_locks_versions():
    stems = {**{(b, False): s for b, s in lock_envs.BUILDS.items()}, **{(b, True): s for b, s in lock_envs.VERL_STEMS.items()}}
    assert [f.name for f in ENV_FILES] == sorted(f"{stem}.yaml" for stem in stems.values())
    for (build, verl), stem in stems.items():
        env = yaml.safe_load((REPO / "envs" / f"{stem}.yaml").read_text())
        (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
        options = [line for line in pip if line.startswith("-")]
        assert options == [f"--extra-index-url https://download.pytorch.org/whl/{build}"], options
        pins = pins_of([line for line in pip if not line.startswith("-")], f"envs/{stem}.yaml")
        deploy = (REPO / "envs" / f"{stem}.post-deploy.sh").read_text()
        (no_deps,) = re.findall(r"^pip install --no-deps (\S+==\S+.*)$", deploy, re.M)
        late = pins_of(no_deps.split(), f"envs/{stem}.post-deploy.sh")
        assert set(pins).isdisjoint(late)
        assert {**pins, **late} == (LOCK if verl else BASE), f"envs/{stem}.yaml + post-deploy: not the lock's versions"
        assert set(late) == ({"evalplus", "nvidia-mmath", "verl"} if verl else {"evalplus", "nvidia-mmath"})  # without their extra requirements
        assert "pip install --no-deps -e ." in deploy


def test_the_env_files_are_what_the_lock_gives():
    assert lock_envs.main(["--check"]) == 0, "run python tools/lock_envs.py"


def test_pyprojects_dependencies_are_satisfied_by_the_locks_versions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    installed = re.search(r'-e "\.\[([a-z,]+)\]"', (REPO / "Makefile").read_text()).group(1).split(",")
    assert installed == ["test", "code", "verl", "slurm"]
    for line in project["dependencies"] + [r for extra in installed for r in extras[extra]]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in LOCK, f"pyproject.toml's {line!r} is not in the lock"
        assert req.specifier.contains(LOCK[name], prereleases=True), f"the lock's {name}=={LOCK[name]} breaks {line!r}"
    # evalplus and verl are in no extra: their requirements pull what the lock leaves out (API
    # clients; wandb, tensorboard, ray[default]); the lock's versions go --no-deps.
    assert not any(canonicalize_name(Requirement(r).name) in {"evalplus", "verl"} for r in sum(extras.values(), []))


def test_make_setup_installs_the_lock_and_chooses_the_torch_build():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^LOCK := constraints\.txt$", makefile, re.M)
    pip_installs = [line for line in makefile.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert len(pip_installs) == 3 and all("-c $(LOCK)" in line for line in pip_installs)
    assert not re.search(r"==\d", makefile)  # versions live in the lock only
    assert "--index-url $(TORCH_INDEX)" in pip_installs[0] and pip_installs[0].endswith(" torch")
    assert re.search(r"^TORCH \?= cpu$", makefile, re.M)
    assert "--no-deps evalplus verl" in pip_installs[2]
    assert "make test" in (REPO / ".ci" / "run").read_text()
