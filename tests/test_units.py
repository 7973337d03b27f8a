"""The systemd units: one generator, real `systemd-analyze` checks, and `service install`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from libtagger.cli import main
from libtagger.service.units import SHIPPED, shipped_unit_text, unit_text

REPO = Path(__file__).resolve().parent.parent

# Measured with systemd 252 (`systemd-analyze security --offline=yes`): the system unit 0.5,
# the user unit 1.2 (7.2 before its hardening; the system unit was 3.0). A little headroom so
# a newer systemd scoring one more check does not fail the build; a lost option will.
THRESHOLDS = {"system": 1.0, "user": 2.0}


def _analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs it)")
    return analyze


def _write_unit(tmp_path: Path, kind: str) -> Path:
    """A unit as `service install` makes it, with a command and folders that exist."""
    music = tmp_path / "music library"
    state = tmp_path / "state"
    music.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    unit = tmp_path / f"libtagger-{kind}.service"
    unit.write_text(unit_text(kind, "/bin/true", [str(music)], str(state), None))
    return unit


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # A user manager's paths need a runtime folder, as under a login session.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_PAGER": "cat"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          cwd=tmp_path, env=env)


def test_shipped_units_are_made_by_unit_text():
    for name in SHIPPED:
        assert (REPO / "systemd" / name).read_text() == shipped_unit_text(name), (
            f"systemd/{name} is out of date: run python -m libtagger.service.units systemd")


def test_unit_text_names_only_the_music_and_the_state_as_writable():
    text = unit_text("user", "/opt/lt/bin/libtagger", ["/srv/My Music", "/mnt/50%"],
                     "/home/a/.local/share/libtagger", "/home/a/lt.toml")
    assert 'ExecStart=/opt/lt/bin/libtagger watch "/srv/My Music" /mnt/50%\n' in text
    assert re.findall(r"^ReadWritePaths=.*$", text, re.M) == [
        'ReadWritePaths=-"/srv/My Music" -/mnt/50% /home/a/.local/share/libtagger']
    assert "Environment=LIBTAGGER_CONFIG=/home/a/lt.toml\n" in text
    assert "PrivateUsers=yes\n" in text and "MemoryDenyWriteExecute" not in text
    assert "ExecStart=/x watch /m$$HOME\n" in unit_text("user", "/x", ["/m$HOME"], "/s", None)
    with pytest.raises(ValueError):
        unit_text("user", "/x", [], "/s", None)
    with pytest.raises(ValueError):
        unit_text("user", "/x", ["Music"], "/s", None)


@pytest.mark.parametrize("kind", ["system", "user"])
def test_units_verify(tmp_path, kind):
    analyze = _analyze()
    unit = _write_unit(tmp_path, kind)
    scope = ["--user"] if kind == "user" else []
    result = _run([analyze, *scope, "verify", str(unit)], tmp_path)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("kind", ["system", "user"])
def test_units_security_exposure(tmp_path, kind):
    analyze = _analyze()
    unit = _write_unit(tmp_path, kind)
    scope = ["--user"] if kind == "user" else []
    threshold = THRESHOLDS[kind]
    result = _run([analyze, *scope, "security", "--offline=yes", "--no-pager",
                   f"--threshold={int(threshold * 10)}", str(unit)], tmp_path)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= threshold, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def _home_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"), "LIBTAGGER_CONFIG": ""}


def _this_libtagger() -> str:
    script = Path(os.path.abspath(sys.executable)).parent / "libtagger"
    return str(script) if script.is_file() else f"{os.path.abspath(sys.executable)} -m libtagger"


def test_install_needs_a_music_folder(tmp_path):
    env = _home_env(tmp_path)
    result = CliRunner().invoke(main, ["service", "install", "--dry-run"], env=env)
    assert result.exit_code == 2
    assert "no music folder" in result.output and "--root" in result.output
    assert not (Path(env["HOME"]) / ".config").exists()


def test_install_dry_run_touches_nothing(tmp_path):
    env = _home_env(tmp_path)
    music = tmp_path / "music"
    music.mkdir()
    result = CliRunner().invoke(main, ["service", "install", "--dry-run", "--root", str(music)],
                                env=env)
    assert result.exit_code == 0, result.output
    assert f"ExecStart={_this_libtagger()} watch {music}\n" in result.output
    assert "would create " + env["XDG_DATA_HOME"] + "/libtagger" in result.output
    assert "systemctl --user enable --now libtagger" in result.output
    assert sorted(p.name for p in Path(env["HOME"]).iterdir()) == []


def test_install_user_writes_the_real_unit(tmp_path):
    env = _home_env(tmp_path)
    music = tmp_path / "music"
    music.mkdir()
    config = Path(env["HOME"]) / "lt.toml"
    config.write_text(f'[library]\nroots = ["{music}"]\n')
    runner = CliRunner()
    result = runner.invoke(main, ["service", "install", "--user", "--config", str(config)],
                           env=env)
    assert result.exit_code == 0, result.output
    unit = Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "libtagger.service"
    text = unit.read_text()
    state = Path(env["XDG_DATA_HOME"]) / "libtagger"
    assert f"ExecStart={_this_libtagger()} watch {music}\n" in text
    assert f"ReadWritePaths=-{music} {state}\n" in text
    assert f"Environment=LIBTAGGER_CONFIG={config}\n" in text
    assert state.is_dir() and (Path(env["XDG_CONFIG_HOME"]) / "libtagger").is_dir()
    assert "systemctl --user daemon-reload" in result.output

    # The same again: nothing to do. Another music folder: a diff, and a refusal without --force.
    assert runner.invoke(main, ["service", "install", "--config", str(config)],
                         env=env).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    result = runner.invoke(main, ["service", "install", "--root", str(other)], env=env)
    assert result.exit_code == 2
    assert f"+ExecStart={_this_libtagger()} watch {other}" in result.output
    assert "--force" in result.output and unit.read_text() == text
    result = runner.invoke(main, ["service", "install", "--root", str(other), "--force"], env=env)
    assert result.exit_code == 0, result.output
    assert f"watch {other}\n" in unit.read_text()


def test_install_system_below_a_root_dir(tmp_path):
    root = tmp_path / "image"
    music = tmp_path / "srv-music"
    music.mkdir()
    result = CliRunner().invoke(main, ["service", "install", "--system", "--root-dir", str(root),
                                       "--root", str(music)], env=_home_env(tmp_path))
    assert result.exit_code == 0, result.output
    text = (root / "etc/systemd/system/libtagger.service").read_text()
    assert f"ExecStart={_this_libtagger()} watch {music}\n" in text
    assert "User=libtagger\n" in text and "StateDirectory=libtagger\n" in text
    assert "Environment=LIBTAGGER_CONFIG=/etc/libtagger/config.toml\n" in text
    assert f"ReadWritePaths=-{music} /var/lib/libtagger\n" in text
    assert (root / "var/lib/libtagger").is_dir() and (root / "etc/libtagger").is_dir()
    # No user database in the image: the useradd line is printed for it, never run.
    assert (f"useradd --root {root} --system --home-dir /var/lib/libtagger "
            "--shell /usr/sbin/nologin libtagger") in result.output
    assert not (root / "etc/passwd").exists()
    assert "systemctl enable --now libtagger" in result.output


def test_system_plan_without_root_only_prints_useradd(tmp_path):
    from libtagger.service.install import plan_install

    plan = plan_install("system", [str(tmp_path)], None, is_root=False,
                        executable=sys.executable)
    assert plan.unit_path == Path("/etc/systemd/system/libtagger.service")
    assert not plan.run_add_user
    assert plan.next_steps[:2] == ("sudo systemctl daemon-reload",
                                   "sudo systemctl enable --now libtagger")


@pytest.mark.parametrize("name", ["dask-scheduler.service", "libtagger-worker.service"])
def test_the_cluster_example_units_verify(tmp_path, name):
    """The shipped examples, with their command pointed at a program that exists here."""
    analyze = _analyze()
    text = (REPO / "systemd" / name).read_text()
    command = re.search(r"^ExecStart=(\S+)", text, re.M)
    assert command and command.group(1).startswith("/opt/libtagger/bin/")
    unit = tmp_path / name
    unit.write_text(text.replace(command.group(1), "/bin/true"))
    result = _run([analyze, "verify", str(unit)], tmp_path)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
