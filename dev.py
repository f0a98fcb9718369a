#!/usr/bin/env python3
"""The two commands a fresh machine needs (only Python 3.11+):

    python3 dev.py demo    # set up .venv, start Redis + master + slaves, run the demo jobs
    python3 dev.py test    # set up .venv, run the test suite

Anything after the command is passed on (``python3 dev.py test -k matmul``). The virtual
environment is (re)installed only when pyproject.toml changed since the last install.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".rqcluster-installed"


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py must run on any python3
        sys.exit(f"rqcluster needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and (BIN / "rqcluster").exists():
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing rqcluster and its test tools into .venv (once)", file=sys.stderr)
    pip = [str(BIN / "python"), "-m", "pip", "install", "-qq", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    commands = {"demo": [str(BIN / "rqcluster"), "demo"],
                "test": [str(BIN / "python"), "-m", "pytest"]}
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_venv()
    os.chdir(ROOT)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.call([*commands[argv[0]], *argv[1:]], env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
