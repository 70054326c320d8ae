"""The Binder environment as repo2docker builds it, with the walkthrough run in it.

repo2docker copies the repository, creates an environment for ``binder/runtime.txt``'s
Python, runs ``pip install -r binder/requirements.txt`` from the repository root, then
``binder/postBuild``. This test does the same in a fresh venv (no Docker here: the base
image's system packages are not what it checks) and runs ``00_walkthrough.ipynb`` in that
venv's own kernel, from a folder outside the repository, so it imports the installed kit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_notebooks import check_walkthrough

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]

RUN_NOTEBOOK = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(
    "import fedlab_kit, sys; print('KIT_FROM', fedlab_kit.__file__, 'PY', sys.prefix)"))
NotebookClient(nb, timeout=900, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[3]}}).execute()
nbformat.write(nb, sys.argv[2])
"""


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], what: str) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
    assert done.returncode == 0, f"{what} failed (exit {done.returncode}):\n{done.stdout[-4000:]}"


def test_walkthrough_runs_in_the_binder_environment(tmp_path: Path) -> None:
    repo = tmp_path / "repo"  # what repo2docker copies: the tracked files
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    runtime = (repo / "binder" / "runtime.txt").read_text().strip()
    assert runtime == f"python-{sys.version_info.major}.{sys.version_info.minor}", \
        f"binder/runtime.txt says {runtime}; the tests run Python {sys.version.split()[0]}"

    env_dir = tmp_path / "binder-env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(env_dir), "PIP_NO_INPUT": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    python = str(env_dir / "bin" / "python")
    _run([python, "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"], cwd=repo,
         env=env, what="pip install -r binder/requirements.txt")
    _run(["bash", "binder/postBuild"], cwd=repo, env=env, what="binder/postBuild")
    overrides = env_dir / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    assert json.loads(overrides.read_text()) == json.loads(
        (repo / "binder" / "overrides.json").read_text())

    work = tmp_path / "work"  # outside the repository: the kernel imports the installed kit
    work.mkdir()
    out = tmp_path / "walkthrough.out.ipynb"
    _run([python, "-c", RUN_NOTEBOOK, str(repo / "notebooks" / "00_walkthrough.ipynb"),
          str(out), str(work)], cwd=work, env=env, what="the walkthrough in the Binder venv")
    nb = json.loads(out.read_text())
    streams = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
               if o.get("output_type") == "stream"]
    text = "".join("".join(o["text"]) for o in streams)
    stderr = "".join("".join(o["text"]) for o in streams if o.get("name") == "stderr")
    assert "Traceback" not in stderr, stderr[-3000:]
    check_walkthrough(text)
    where = text.split("KIT_FROM ")[1].split()
    assert Path(where[0]).is_relative_to(env_dir) and Path(where[2]) == env_dir, where
