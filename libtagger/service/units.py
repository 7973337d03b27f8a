"""The systemd units for ``libtagger watch``: one function writes both, shipped or installed.

``unit_text`` is the one source of truth: ``libtagger service install`` fills it with the
paths of this installation, and the files in ``systemd/`` are it filled with generic paths
(``python -m libtagger.service.units systemd`` rewrites them; a test checks they agree).

Values are given in unit-file syntax: specifiers such as ``%h`` are allowed, so a literal
``%`` in a path must be passed as ``%%`` (see :func:`escape_specifiers`). Quoting and the
``$`` of command lines are handled here.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

KINDS = ("user", "system")
UNIT_NAME = "libtagger.service"
SYSTEM_USER = "libtagger"

# What the shipped files in systemd/ are made of.
SHIPPED = {
    "libtagger-user.service": dict(kind="user", exec_start="%h/.local/bin/libtagger",
                                   roots=("%h/Music",), state_dir="%h/.local/share/libtagger",
                                   config_path=None),
    "libtagger.service": dict(kind="system", exec_start="/usr/local/bin/libtagger",
                              roots=("/srv/music",), state_dir="/var/lib/libtagger",
                              config_path="/etc/libtagger/config.toml"),
}

# Sandboxing that works for both managers. In a user manager (systemd --user) the mount,
# kernel and network options need a user namespace, so the user unit asks for one
# (PrivateUsers=yes): systemd 252 silently skips them otherwise, 253+ implies it.
# Left out on purpose: MemoryDenyWriteExecute (not yet verified with every TFLite kernel
# libtagger runs; numba, which needed executable memory, is no longer loaded);
# SystemCallFilter=~@privileged (it holds @chown,
# and a tag write gives the rewritten file the original's group); ~@resources (thread pools
# may set their affinity); ProcSubset=pid (hides /proc/cpuinfo and /proc/meminfo).
_HARDENING = """\
# Hardening: read-only system and home except the music and libtagger's own state; no
# network (only sd_notify's AF_UNIX socket), no devices, no privileges, no new namespaces.
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={read_write}
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
PrivateMounts=yes
{private_users}NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
{protect_proc}KeyringMode=private
RestrictAddressFamilies=AF_UNIX
{ip_deny}{remove_ipc}RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# New files (the database, its journal, the lock) are private; tag writes keep each music
# file's own mode.
UMask=0077
"""


def escape_specifiers(value: str) -> str:
    """A literal string (a real path) as unit-file text: ``%`` becomes ``%%``."""
    return value.replace("%", "%%")


def quote_word(value: str) -> str:
    """One word of a unit-file list, double-quoted when it has blanks or quotes."""
    if value and not any(c in value for c in " \t\n\"'\\;"):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _command_word(value: str) -> str:
    """One argument of ExecStart=: quoted, and ``$`` doubled so it is not a variable."""
    return quote_word(value.replace("$", "$$"))


def _header(kind: str) -> str:
    if kind == "user":
        first = ("# libtagger watch as a per-user service (systemctl --user), for the music in "
                 "your home.")
        command = "libtagger service install --user"
    else:
        first = "# libtagger watch as a system service, running as the dedicated user libtagger."
        command = "sudo libtagger service install --system"
    return (
        f"{first}\n"
        f"# `{command}` writes it with the paths of your installation. Run that\n"
        "# again with --force after changing the music folders: they are named twice here, on\n"
        "# ExecStart and in ReadWritePaths.\n"
    )


def unit_text(kind: str, exec_start: str, roots: Sequence[str], state_dir: str,
              config_path: str | None) -> str:
    """The unit file that runs ``<exec_start> watch <roots…>`` under systemd.

    ``kind`` is ``"user"`` (``systemctl --user``) or ``"system"`` (a system service as the
    ``libtagger`` user). ``exec_start`` is the command that runs libtagger, already a
    unit-file command line (e.g. ``/venv/bin/libtagger`` or ``/usr/bin/python3 -m
    libtagger``). ``roots`` are the music folders, the only writable places besides
    ``state_dir`` (the database, the lock). ``config_path`` becomes
    ``$LIBTAGGER_CONFIG`` (None: the default config of the service's user).

    Raises:
        ValueError: an unknown kind, no roots, or a relative path.
    """
    if kind not in KINDS:
        raise ValueError(f"unit kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not roots:
        raise ValueError("a unit needs at least one music folder")
    for path in (*roots, state_dir, *([config_path] if config_path else [])):
        if not path.startswith(("/", "%h", "%S", "%E")):
            raise ValueError(f"unit paths must be absolute: {path}")

    # "-": a music folder that is not there at start (an unmounted share) is not fatal.
    read_write = " ".join(["-" + quote_word(r) for r in roots] + [quote_word(state_dir)])
    environment: list[str] = []
    if kind == "system":
        environment.insert(0, f"LIBTAGGER_DB={state_dir}/library.db")
    if config_path:
        environment.insert(0, f"LIBTAGGER_CONFIG={config_path}")
    command = " ".join([exec_start, "watch", *(_command_word(r) for r in roots)])

    lines = [_header(kind), "[Unit]"]
    if kind == "user":
        lines.append("Description=libtagger: tag new music in your home with its genre")
    else:
        lines += ["Description=libtagger: tag new music with its genre"]
    if kind == "system":
        lines.append("After=local-fs.target remote-fs.target")
    lines += ["", "[Service]", "Type=notify", "NotifyAccess=main"]
    if kind == "system":
        lines += [f"User={SYSTEM_USER}", f"Group={SYSTEM_USER}",
                  "StateDirectory=libtagger", "ConfigurationDirectory=libtagger"]
    lines += [f"Environment={quote_word(e)}" for e in environment]
    lines += [
        f"ExecStart={command}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "# SIGTERM to the daemon only: it stops its own workers after putting their jobs back.",
        "KillMode=mixed",
        "TimeoutStopSec=30",
        "Restart=on-failure",
        "RestartSec=10",
        "WatchdogSec=60",
        "Nice=10",
    ]
    if kind == "system":
        lines.append("IOSchedulingClass=idle")
    lines += ["", _HARDENING.format(
        read_write=read_write,
        private_users="PrivateUsers=yes\n",
        # hidepid= needs a procfs mounted by root; a user manager cannot.
        protect_proc="ProtectProc=invisible\n" if kind == "system" else "",
        # IP firewalling needs BPF, which a user manager may not attach; the user unit has no
        # IP sockets anyway (RestrictAddressFamilies, PrivateNetwork).
        ip_deny="IPAddressDeny=any\n" if kind == "system" else "",
        # Only for the dedicated user: in a user unit it would remove the IPC of all your programs.
        remove_ipc="RemoveIPC=yes\n" if kind == "system" else "",
    ).rstrip("\n")]
    lines += ["", "[Install]",
              "WantedBy=" + ("default.target" if kind == "user" else "multi-user.target"), ""]
    return "\n".join(lines)


def shipped_unit_text(name: str) -> str:
    """The text of ``systemd/<name>`` as it should be."""
    return unit_text(**SHIPPED[name])


def main(argv: Sequence[str]) -> int:
    """Rewrite the shipped units into the folder given (``python -m … systemd``)."""
    folder = Path(argv[0] if argv else "systemd")
    for name in SHIPPED:
        (folder / name).write_text(shipped_unit_text(name), encoding="utf-8")
        print(f"wrote {folder / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
