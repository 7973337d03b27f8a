"""Run libtagger as an unprivileged user (nobody) from a test that runs as root.

Root ignores file modes, so an unreadable folder or another user's file can only be tried
as someone else. The child drops to uid/gid 65534 before it starts (``preexec_fn``) and
works in a world-writable folder under /tmp (pytest's own temporary folders are private to
root). The venv's interpreter may live where nobody cannot reach (a pyenv build under
/root): then a Python of the same version that nobody can run is used with the venv's
packages on ``PYTHONPATH``; where there is none, the test is skipped, saying why.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

NOBODY = 65534
REPO = Path(__file__).resolve().parent.parent
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def _drop() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def shared_folder() -> Path:
    """A fresh folder under /tmp that nobody may write into (removed by the caller)."""
    folder = Path(tempfile.mkdtemp(prefix="libtagger-nobody-", dir="/tmp"))
    folder.chmod(0o777)
    return folder


@functools.cache
def _numba_cache() -> Path:
    """One compile cache for every unprivileged run of the session (numba compiles librosa's
    kernels on first use: half a minute each time otherwise)."""
    folder = shared_folder()
    atexit.register(shutil.rmtree, folder, True)
    return folder


def environment(home: Path, config: Path) -> dict[str, str]:
    """What the unprivileged libtagger sees: its own home, config and caches, no root's."""
    site = sysconfig.get_paths()["purelib"]
    return {
        "PATH": "/usr/bin:/bin", "HOME": str(home), "LIBTAGGER_CONFIG": str(config),
        "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"), "NUMBA_CACHE_DIR": str(_numba_cache()),
        "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "VENV_SITE": site,
    }


# No site module (``-S``: the system's dist-packages stay out), then the venv's site-packages
# as a site folder (its .pth files too: the editable install maps libtagger.migrations
# there), then libtagger's own ``python -m libtagger``.
LAUNCH = ("import os, runpy, site, sys; site.addsitedir(os.environ['VENV_SITE']); "
          "sys.argv[0] = 'libtagger'; runpy.run_module('libtagger', run_name='__main__', "
          "alter_sys=True)")
PROBE = ("import os, site; site.addsitedir(os.environ['VENV_SITE']); "
         "import libtagger.pipeline.scan, libtagger.analysis.model, libtagger.migrations, av, "
         "mutagen, numpy")


def interpreter(env: dict[str, str]) -> str:
    """A Python nobody can run that imports libtagger and its native dependencies."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run libtagger as another user (uid 65534)")
    tried = []
    for candidate in dict.fromkeys([sys.executable, os.path.realpath(sys.executable),
                                    shutil.which(f"python{VERSION}", path="/usr/bin:/bin") or "",
                                    "/usr/bin/python3"]):
        if not candidate:
            continue
        try:
            result = subprocess.run([candidate, "-S", "-c", PROBE], preexec_fn=_drop, env=env,
                                    capture_output=True, text=True, timeout=120, cwd="/")
        except OSError as exc:
            tried.append(f"{candidate}: {exc.strerror}")
            continue
        if result.returncode == 0:
            version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                     preexec_fn=_drop, capture_output=True, text=True, cwd="/")
            if version.stdout.strip() == str(sys.version_info[:2]):
                return candidate
            tried.append(f"{candidate}: Python {version.stdout.strip()}, not {VERSION}")
        else:
            tried.append(f"{candidate}: {result.stderr.strip().splitlines()[-1:]}")
    pytest.skip("no Python that uid 65534 can run imports this venv: " + "; ".join(tried))


def run_as_nobody(args: list[str], home: Path, config: Path,
                  timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m libtagger ARGS`` as uid/gid 65534; asserts it really ran unprivileged."""
    env = environment(home, config)
    python = interpreter(env)
    check = subprocess.run([python, "-c", "import os; print(os.geteuid(), os.getegid(), "
                            "open('/proc/self/status').read().split('CapEff:')[1].split()[0])"],
                           preexec_fn=_drop, env=env, capture_output=True, text=True, cwd="/")
    assert check.stdout.split() == [str(NOBODY), str(NOBODY), "0000000000000000"], check
    return subprocess.run([python, "-S", "-c", LAUNCH, *args], preexec_fn=_drop, env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=str(home))


def popen_as_nobody(args: list[str], home: Path, config: Path,
                    **kwargs: object) -> subprocess.Popen[str]:
    """Start ``python -m libtagger ARGS`` as uid/gid 65534 (a daemon), in its own session."""
    env = environment(home, config)
    python = interpreter(env)
    return subprocess.Popen([python, "-S", "-c", LAUNCH, *args], preexec_fn=_drop, env=env,
                            cwd=str(home), start_new_session=True, text=True,
                            **kwargs)  # type: ignore[call-overload]
