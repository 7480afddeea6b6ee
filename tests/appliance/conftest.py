"""A real system user for the appliance tests: the agent's user, as install.sh makes it on a box."""

from __future__ import annotations

import dataclasses
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
# The distribution's interpreter, as on a box: the test venv's own may sit under /root, which the user cannot read.
SYSTEM_PYTHON = Path("/usr/bin/python3")


def program_version(python: Path) -> str:
    """The edge-agent version installed for ``python`` (isolated: no PYTHONPATH, so not this checkout's)."""
    found = subprocess.run(
        [str(python), "-I", "-c", "import importlib.metadata as m; print(m.version('edge-agent'))"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return found.stdout.strip()


@dataclasses.dataclass(frozen=True)
class SystemUser:
    name: str
    uid: int
    gid: int
    home: Path  # a directory under /tmp that the user can reach (pytest's own tmp dirs are root's only)
    python: str  # an interpreter both root and the user can run
    env: dict[str, str]  # with this checkout and the test venv's libraries on PYTHONPATH for ``python``

    def command(self, *argv: str) -> list[str]:
        """``argv`` run as this user, with its groups, the way systemd's User= runs a unit."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]


def _let_others_reach(*paths: Path) -> None:
    """The user runs this checkout with the test venv's libraries (PYTHONPATH). A checkout cloned into `mktemp -d`
    is itself a 0700 directory: give these paths the read and search bits for others (Python lists a path entry to
    import from it) and the directories above them the search bit only. It stays: several workers rely on it at once."""
    for path in paths:
        for directory, bits in [(path, stat.S_IROTH | stat.S_IXOTH)] + [(d, stat.S_IXOTH) for d in path.parents]:
            mode = stat.S_IMODE(directory.stat().st_mode)
            if mode & bits != bits:
                directory.chmod(mode | bits)


def _system_user() -> Iterator[SystemUser]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a system user with useradd (CI runs as root in a container)")
    for tool in ("useradd", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (passwd / util-linux)")
    version = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    ).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"needs {SYSTEM_PYTHON} of Python {sys.version_info[:2]} to run the agent as another user")
    _let_others_reach(REPO, Path(sysconfig.get_paths()["purelib"]))
    name = f"edget{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    try:
        home.chmod(0o755)
        entry = pwd.getpwnam(name)
        env = {**os.environ, "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
        env.pop("VIRTUAL_ENV", None)
        yield SystemUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=home, python=str(SYSTEM_PYTHON), env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def system_user() -> Iterator[SystemUser]:
    """A uniquely named system user (useradd) and a world-reachable base directory; both removed afterwards."""
    yield from _system_user()


@pytest.fixture(scope="module")
def module_user() -> Iterator[SystemUser]:
    """The same, shared by one test module (an install it prepares once belongs to it)."""
    yield from _system_user()
