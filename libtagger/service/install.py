"""``libtagger service install``: where the unit, the state and the config of a service go.

:func:`plan_install` decides everything and touches nothing (``--dry-run`` prints the plan);
:func:`carry_out` creates the folders, the ``libtagger`` user and the unit. The command line
prints; this module does not.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from libtagger.config import APP_NAME
from libtagger.errors import LibtaggerError
from libtagger.service.units import (
    SYSTEM_USER,
    UNIT_NAME,
    escape_specifiers,
    quote_word,
    unit_text,
)

SYSTEM_STATE_DIR = "/var/lib/libtagger"
SYSTEM_CONFIG_DIR = "/etc/libtagger"
SYSTEM_UNIT_DIR = "/etc/systemd/system"


class InstallError(LibtaggerError):
    """The service cannot be installed as asked (an existing unit, a missing user…)."""


@dataclass(frozen=True)
class Installation:
    """What installing the service means, worked out before anything is touched."""

    kind: str
    unit_path: Path
    """Where the unit file goes (below --root-dir when one is given)."""
    unit: str
    existing: str | None
    """The unit already at ``unit_path``, if any."""
    folders: tuple[Path, ...]
    """State and config folders to create (those missing)."""
    add_user: tuple[str, ...] | None
    """The ``useradd`` command when the system user is missing."""
    run_add_user: bool
    """Whether we run ``add_user`` ourselves (root, no --root-dir) or only print it."""
    warnings: tuple[str, ...]
    next_steps: tuple[str, ...]

    @property
    def changes_unit(self) -> bool:
        """Whether a different unit is already installed."""
        return self.existing is not None and self.existing != self.unit


def exec_start_command(executable: str | None = None) -> str:
    """How the unit runs this installation: its ``libtagger`` script, else ``python -m``.

    The script sits next to the running interpreter in a venv, a pipx venv or a
    ``pip install --user``'s ``~/.local/bin`` only when Python lives there too; the symlink of
    a venv's python is kept, not resolved, or the venv would be lost.
    """
    python = os.path.abspath(executable or sys.executable)
    script = Path(python).parent / "libtagger"
    if script.is_file() and os.access(script, os.X_OK):
        argv = [str(script)]
    else:
        argv = [python, "-m", "libtagger"]
    return " ".join(quote_word(escape_specifiers(a).replace("$", "$$")) for a in argv)


def _home_paths(environ: Mapping[str, str]) -> tuple[Path, Path, Path]:
    """The user's unit folder, libtagger's data folder and its config folder (XDG)."""
    home = Path(environ.get("HOME") or Path.home())
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    data_home = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return config_home / "systemd" / "user", data_home / APP_NAME, config_home / APP_NAME


def _under(root_dir: Path | None, path: str) -> Path:
    """``path`` inside ``root_dir`` (an image, a package build), or itself."""
    return root_dir / path.lstrip("/") if root_dir else Path(path)


def _user_exists(name: str, root_dir: Path | None) -> bool:
    if root_dir is None:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return False
        return True
    passwd = root_dir / "etc" / "passwd"
    if not passwd.is_file():
        return False
    return any(line.split(":", 1)[0] == name for line in passwd.read_text().splitlines())


def plan_install(kind: str, roots: Sequence[str], config_path: str | None,
                 root_dir: str | None = None, environ: Mapping[str, str] | None = None,
                 executable: str | None = None, is_root: bool | None = None,
                 database: str = "") -> Installation:
    """Work out the unit and the folders for a ``kind`` ("user"/"system") service.

    ``roots`` are the music folders (already chosen: --root, else library.roots);
    ``database`` is the config's library.database ("" for the default, in the state folder).

    Raises:
        InstallError: no music folder, or --root-dir for a user service.
    """
    environ = os.environ if environ is None else environ
    is_root = os.geteuid() == 0 if is_root is None else is_root
    if not roots:
        raise InstallError("no music folder to watch: give one with --root DIR (repeatable) "
                           "or set library.roots in the config")
    if kind == "user" and root_dir:
        raise InstallError("--root-dir is for --system installs")
    base = Path(root_dir).absolute() if root_dir else None
    real_roots = [os.path.abspath(os.path.expanduser(r)) for r in roots]
    warnings = [f"{r} does not exist (yet): the service starts without it and watches it "
                "once it is there" for r in real_roots if not os.path.isdir(_under(base, r))]
    exec_start = exec_start_command(executable)

    if kind == "user":
        unit_dir, state_dir, config_dir = _home_paths(environ)
        unit_path = unit_dir / UNIT_NAME
        folders = [state_dir, config_dir]
        add_user: tuple[str, ...] | None = None
        unit_config = os.path.abspath(config_path) if config_path else None
        manager = "systemctl --user"
        journal = "journalctl --user -u libtagger -f"
    else:
        state_dir = Path(SYSTEM_STATE_DIR)
        unit_path = _under(base, SYSTEM_UNIT_DIR) / UNIT_NAME
        folders = [_under(base, SYSTEM_STATE_DIR), _under(base, SYSTEM_CONFIG_DIR)]
        unit_config = os.path.abspath(config_path) if config_path else (
            f"{SYSTEM_CONFIG_DIR}/config.toml")
        add_user = None
        if not _user_exists(SYSTEM_USER, base):
            add_user = ("useradd", *(("--root", str(base)) if base else ()), "--system",
                        "--home-dir", SYSTEM_STATE_DIR, "--shell", "/usr/sbin/nologin",
                        SYSTEM_USER)
        manager = "systemctl"
        journal = "journalctl -u libtagger -f"
        if exec_start.startswith(("/home/", "/root/", '"/home/', '"/root/')):
            warnings.append(f"{exec_start.split()[0]} is in a home folder: the {SYSTEM_USER} "
                            "user must be able to read it (or install libtagger outside "
                            "/home, e.g. a venv in /opt)")

    if database and kind == "system":
        warnings.append(f"library.database ({database}) is ignored: the system service keeps "
                        f"its database in {SYSTEM_STATE_DIR}")
    elif database and ("://" in database or not os.path.abspath(
            os.path.expanduser(database)).startswith(str(state_dir) + os.sep)):
        warnings.append(f"library.database ({database}) is outside {state_dir}, the only "
                        "writable folder besides the music, and the service has no network: "
                        "remove the setting to use the default database")
    unit = unit_text(kind, exec_start, [escape_specifiers(r) for r in real_roots],
                     escape_specifiers(str(state_dir)),
                     escape_specifiers(unit_config) if unit_config else None)
    existing = unit_path.read_text(encoding="utf-8") if unit_path.is_file() else None
    sudo = "" if kind == "user" or is_root else "sudo "
    steps = [f"{sudo}{manager} daemon-reload", f"{sudo}{manager} enable --now libtagger",
             f"{sudo}{manager} status libtagger", f"{sudo}{journal}"]
    if kind == "user":
        steps.append('loginctl enable-linger "$USER"   # keep it running while you are '
                     "logged out")
    return Installation(
        kind=kind, unit_path=unit_path, unit=unit, existing=existing,
        folders=tuple(f for f in folders if not f.is_dir()), add_user=add_user,
        run_add_user=add_user is not None and is_root and base is None,
        warnings=tuple(warnings), next_steps=tuple(steps))


def carry_out(plan: Installation, force: bool = False) -> None:
    """Create the folders and the system user, and write the unit.

    Raises:
        InstallError: a different unit is installed and not ``force``; a step failed.
    """
    if plan.changes_unit and not force:
        raise InstallError(f"{plan.unit_path} exists and differs (see the diff); "
                           "use --force to replace it")
    if plan.run_add_user and plan.add_user:
        result = subprocess.run(list(plan.add_user), capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise InstallError(f"{shlex.join(plan.add_user)} failed: "
                               f"{result.stderr.strip() or result.returncode}")
    try:
        for folder in plan.folders:
            # The user's state holds the database of what is in your library: yours alone.
            folder.mkdir(parents=True, exist_ok=True, mode=0o700 if plan.kind == "user" else 0o755)
        plan.unit_path.parent.mkdir(parents=True, exist_ok=True)
        temp = plan.unit_path.with_name(f".{plan.unit_path.name}.tmp")
        temp.write_text(plan.unit, encoding="utf-8")
        temp.chmod(0o644)
        temp.replace(plan.unit_path)
    except OSError as exc:
        hint = " (run it with sudo)" if isinstance(exc, PermissionError) else ""
        raise InstallError(f"cannot write {exc.filename or plan.unit_path}: "
                           f"{exc.strerror}{hint}") from exc
