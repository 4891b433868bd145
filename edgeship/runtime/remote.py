"""Runs edgeship on a device over the system's own ``ssh``, from the desk.

The device needs only the runtime install (``pip install edgeship``, no TensorFlow). One ssh
connection carries everything: a short POSIX shell script on the device finds its edgeship,
checks its version against this one, makes a private temporary folder, unpacks the files sent
as a tar stream on the connection's stdin, runs ``edgeship ARGV --json`` inside that folder and
removes the folder when it exits. ``ssh`` is the user's own, run with ``BatchMode=yes`` so it
never prompts: keys, the agent, ``~/.ssh/config``, ``ProxyJump`` and connection sharing apply.

Nothing is left running on the device and no folder stays behind when the command ends, fails,
times out, is interrupted with Ctrl-C or loses its connection. Without a terminal, sshd does
not signal the remote command when a connection drops, so the script watches stdin, which this
side keeps open until the end: end-of-file there means the connection is gone, and the script
then stops edgeship and removes the folder.

Two environment variables reach further:

- ``EDGESHIP_REMOTE_COMMAND``: the edgeship command on the device, when it is not ``edgeship``
  on the device's ``PATH`` or in ``~/.local/bin``; for a virtualenv, ``~/venv/bin/edgeship``.
- ``EDGESHIP_SSH_CONFIG``: an ssh config file used instead of ``~/.ssh/config`` (``ssh -F``).

Example:
    >>> parse_target("ssh://pi@raspberrypi.local:2222")
    Target(destination='pi@raspberrypi.local', port=2222)
    >>> parse_target("pi5")
    Target(destination='pi5', port=None)
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import shlex
import subprocess
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import edgeship
from edgeship.errors import ConfigError, DataError, RemoteError

__all__ = ["REMOTE_COMMAND_ENV", "SSH_CONFIG_ENV", "Target", "compatible_versions", "parse_target", "run_remote"]

log = logging.getLogger(__name__)

REMOTE_COMMAND_ENV = "EDGESHIP_REMOTE_COMMAND"
SSH_CONFIG_ENV = "EDGESHIP_SSH_CONFIG"
_MARK = "edgeship-remote:"  # the script's own messages on stderr, told apart from edgeship's
_SETUP_FAILED = 90          # the script's exit code when edgeship never ran
_SSH_FAILED = 255           # ssh's exit code for its own errors (connection, authentication)
# User names and host names (or ssh config aliases) as ssh accepts them, never starting with a
# character that ssh or a shell could read as something else ("-oProxyCommand=...").
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# ssh's own options that scp also sets for a non-interactive transfer: no terminal (it would
# mangle the binary stream), no forwarding, no local or configured remote command.
_SSH_OPTIONS = ("-T", "-x", "-o", "BatchMode=yes", "-o", "ClearAllForwardings=yes", "-o", "ForwardAgent=no",
                "-o", "PermitLocalCommand=no", "-o", "RemoteCommand=none")

# Runs on the device under sh: $1 the wanted major.minor version, $2 the edgeship command, the
# rest edgeship's arguments. No backslashes, so that every login shell (fish too) passes it as is.
# stop() ignores further signals: a second Ctrl-C or sshd's TERM after HUP must not cut the
# cleanup short.
_SCRIPT = """
set -f
want=$1 command=$2
shift 2
dir= job= watch=
stop() {
  trap - EXIT
  trap '' HUP INT TERM
  if [ -n "$job" ]; then kill -TERM "$job" 2>/dev/null; wait "$job" 2>/dev/null; fi
  if [ -n "$watch" ]; then kill -TERM "$watch" 2>/dev/null; fi
  if [ -n "$dir" ]; then cd / && rm -rf "$dir"; fi
}
trap stop EXIT
trap 'stop; exit 129' HUP
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
fail() { echo "edgeship-remote: $*" >&2; exit 90; }
case $command in "~/"*) command=$HOME/${command#"~/"} ;; esac
case $command in
  */*) [ -f "$command" ] && [ -x "$command" ] || fail missing "$command" ;;
  *) found=$(command -v "$command" 2>/dev/null) || found=
     if [ -z "$found" ] && [ "$command" = edgeship ] && [ -x "$HOME/.local/bin/edgeship" ]; then
       found=$HOME/.local/bin/edgeship
     fi
     [ -n "$found" ] || fail missing "$command"
     command=$found ;;
esac
python=python3
IFS= read -r first < "$command" || true
case $first in "#!"*python*) python=${first#"#!"} ;; esac
dir=$(mktemp -d "${TMPDIR:-/tmp}/edgeship.XXXXXXXX") || fail mktemp
cd "$dir" || fail mktemp
version=$($python -c "import edgeship; print(edgeship.__version__)" 2>/dev/null) || fail broken "$command"
case $version in "$want"|"$want".*) ;; *) fail version "$version" ;; esac
exec 3<&0
tar -xf - <&3 || fail tar
{ while read -r line; do :; done; kill -TERM $$; } <&3 &
watch=$!
"$command" "$@" </dev/null &
job=$!
wait "$job"
status=$?
job=
exit "$status"
"""


@dataclass(frozen=True)
class Target:
    """Where ssh goes: ``destination`` (``user@host`` or a config name) and an optional port."""

    destination: str
    port: int | None = None


def parse_target(target: str) -> Target:
    """Reads ``ssh://[user@]host[:port]``, ``user@host`` or an ssh config name.

    Args:
        target: The device as the user typed it.

    Returns:
        The destination ssh is given, and the port when the target names one.

    Raises:
        ConfigError: The target is empty, malformed, or could be read as an option.

    Example:
        >>> parse_target("pi@192.168.1.20")
        Target(destination='pi@192.168.1.20', port=None)
        >>> parse_target("-oProxyCommand=touch_x")
        Traceback (most recent call last):
        ...
        edgeship.errors.ConfigError: ...
    """
    port = None
    if target.startswith("ssh://"):
        parts = urlsplit(target)
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password is not None:
            raise ConfigError(f"Expected ssh://[user@]host[:port] with nothing after the port. Received {target!r}.")
        try:
            port, host, user = parts.port, parts.hostname or "", parts.username
        except ValueError as e:
            raise ConfigError(f"The port of {target!r} is not a number from 1 to 65535.") from e
        if port == 0:
            raise ConfigError(f"The port of {target!r} is not a number from 1 to 65535.")
    else:
        user, _, host = target.rpartition("@") if "@" in target else (None, "", target)
    if user is not None and not _USER.match(user) or not _valid_host(host):
        raise ConfigError(
            f"Expected a device as ssh://[user@]host[:port], user@host or an ssh config name (letters, digits, "
            f"'.', '_', '-', not starting with '-'). Received {target!r}.")
    return Target(f"{user}@{host}" if user else host, port)


def _valid_host(host: str) -> bool:
    if _HOST.match(host):
        return True
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def compatible_versions(local: str, remote: str) -> bool:
    """The rule both sides follow: the same major.minor version (``0.1.0`` runs with ``0.1.3``).

    Example:
        >>> compatible_versions("0.1.0", "0.1.7"), compatible_versions("0.1.0", "0.2.0")
        (True, False)
    """
    return local.split(".")[:2] == remote.split(".")[:2]


def _series(version: str) -> str:
    return ".".join(version.split(".")[:2])


def run_remote(target: str, argv: Sequence[str], files: Sequence[Path], *, timeout: float | None = None,
               ssh_options: Sequence[str] = (), remote_command: str | None = None) -> dict:
    """Runs ``edgeship ARGV --json`` on a device over one ssh connection; returns its JSON.

    ``files`` are copied into a fresh temporary folder on the device, and every item of ``argv``
    that names one of them is replaced by its copy. Every mention of a copy in the result (and in
    an error message) is given back its local name, so that rows match the local ones; the
    device's identity, when the command reports one, comes back as the device wrote it.

    Args:
        target: ``ssh://[user@]host[:port]``, ``user@host`` or an ssh config name.
        argv: edgeship's arguments, e.g. ``["bench", "m.tflite", "--num-runs", "50"]``.
        files: Local files (or folders) the command reads.
        timeout: Seconds before the run is abandoned (and cleaned up on the device); None waits.
        ssh_options: Extra ``ssh`` arguments, e.g. ``["-F", "test_config"]``; they cannot turn
            ``BatchMode`` off.
        remote_command: The edgeship command on the device; default ``$EDGESHIP_REMOTE_COMMAND``,
            else ``edgeship`` on its ``PATH`` or in ``~/.local/bin``. ``~/`` means its home.

    Returns:
        The command's JSON output.

    Raises:
        ConfigError: ``target`` is not a device name.
        DataError: One of ``files`` does not exist.
        RemoteError: ssh failed, the device's edgeship is missing or of another version, or the
            command failed there (its error line is in the message).

    Example (a device on the network; ``tests/test_remote.py`` runs it against a real sshd)::

        run_remote("ssh://pi@raspberrypi.local", ["bench", "m.tflite"], [Path("m.tflite")])
        # {'config': {...}, 'results': [{'model': 'm.tflite', 'median_ms': ...}], 'device': {...}}
    """
    device = parse_target(target)
    command = remote_command or os.environ.get(REMOTE_COMMAND_ENV) or "edgeship"
    if not command.strip() or "\n" in command or "\0" in command:
        raise ConfigError(f"The remote edgeship command must be a path or a command name. Received {command!r}.")
    names = _remote_names(files)
    args = [names.get(_key(arg), arg) for arg in argv]
    args += [] if "--json" in args else ["--json"]
    script = shlex.join(["sh", "-c", _SCRIPT, "edgeship-remote", _series(edgeship.__version__), command, *args])
    ssh = ["ssh", *_SSH_OPTIONS, *_config_options(), *(["-p", str(device.port)] if device.port else []),
           *ssh_options, "--", device.destination, script]
    log.debug("running on %s: edgeship %s", target, shlex.join(args))
    returncode, out, err = _run_ssh(ssh, names, timeout, target)
    local = {remote: original for original in argv if (remote := names.get(_key(original)))}
    return _interpret(target, command, returncode, out, err, local)


def _key(path: str | Path) -> str:
    return os.path.abspath(path)


def _remote_names(files: Sequence[Path]) -> dict[str, str]:
    """Local absolute path -> its copy's path, relative to the device's folder. The index keeps
    two files with one name apart; the name stays, because commands print it."""
    names = {}
    for path in map(Path, files):
        if not path.exists():
            raise DataError(f"{path} does not exist: nothing to copy to the device.")
        names.setdefault(_key(path), f"{len(names)}/{path.name}")
    return names


def _config_options() -> list[str]:
    config = os.environ.get(SSH_CONFIG_ENV)
    return ["-F", config] if config else []


def _run_ssh(ssh: list[str], names: dict[str, str], timeout: float | None, target: str) -> tuple[int, bytes, bytes]:
    """Runs ``ssh`` with the files as a tar stream on its stdin; returns exit code, stdout, stderr.

    stdin stays open until ssh has exited: the device reads its end-of-file as a lost connection.
    """
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(ssh, stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as e:
        os.close(write_end)
        raise RemoteError("`ssh` was not found on this machine: install OpenSSH's client "
                          "(`apt-get install openssh-client`).") from e
    finally:
        os.close(read_end)
    stream = os.fdopen(write_end, "wb", buffering=0)
    failures: list[OSError] = []
    writer = threading.Thread(target=_send, args=(stream, names, failures), daemon=True)
    writer.start()
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        raise RemoteError(f"edgeship on {target} did not finish within {timeout:g} s; it was stopped there. "
                          "Give it more time or fewer runs.") from None
    except BaseException:  # Ctrl-C above all: closing the connection stops the device's side
        _stop(process)
        raise
    finally:
        writer.join()
        stream.close()
    if failures:
        raise DataError(f"Could not read a file to copy to {target}: {failures[0]}") from failures[0]
    return process.returncode, out, err


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def _send(stream, names: dict[str, str], failures: list[OSError]) -> None:
    try:
        # GNU format: GNU tar, BusyBox and bsdtar all read it, long names included.
        # dereference: a linked model arrives as the file it points to, not as a dangling link.
        with tarfile.open(fileobj=stream, mode="w|", format=tarfile.GNU_FORMAT, dereference=True) as archive:
            for local, remote in names.items():
                archive.add(local, arcname=remote, filter=_plain_member)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the device stopped reading; its exit status says why
    except OSError as e:
        failures.append(e)


def _plain_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    # A device running as root would otherwise recreate this machine's owners.
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def _interpret(target: str, command: str, returncode: int, out: bytes, err: bytes, local: dict[str, str]) -> dict:
    """The command's JSON with local file names (``local``: copy -> local name), or the
    RemoteError that says what went wrong and what to do."""
    lines = err.decode(errors="replace").splitlines()
    for line in lines:
        log.debug("%s: %s", target, line)
    marks = [line[len(_MARK):].split() for line in lines if line.startswith(_MARK)]
    if returncode == _SETUP_FAILED and marks:
        raise _setup_error(target, command, marks[-1])
    if returncode < 0:
        raise RemoteError(f"The connection to {target} was lost: ssh ended by signal {-returncode}. The device "
                          "stops the command and removes its files on its own.")
    if returncode == _SSH_FAILED:
        raise RemoteError(
            f"ssh could not run the command on {target}: {_last_line(lines) or 'no message'}. Check that "
            f"`ssh {target} true` works without a prompt (edgeship runs ssh with BatchMode=yes: keys or an "
            "agent, a known host key).")
    result = _restore_names(_parse_json(out), local)
    lines = _restore_names(lines, local)
    if returncode != 0:
        reason = _last_line(lines, errors_only=True) or _first_error(result) or _last_line(lines) or "no message"
        raise RemoteError(f"edgeship on {target} failed (exit {returncode}): {reason}", result=result,
                          remote_exit_code=returncode)
    if result is None:
        raise RemoteError(f"edgeship on {target} printed no JSON object: {out[:200]!r}. Run the same command "
                          "there with --json to see its output.", remote_exit_code=returncode)
    return result


def _setup_error(target: str, command: str, mark: list[str]) -> RemoteError:
    series = _series(edgeship.__version__)
    install = (f'pip install "edgeship=={series}.*" (the runtime alone, no TensorFlow; in a virtualenv, set '
               f"{REMOTE_COMMAND_ENV}=~/VENV/bin/edgeship)")
    reason, detail = mark[0], " ".join(mark[1:])
    if reason == "missing":
        return RemoteError(f"edgeship is not installed on {target} ({command!r} was not found there). Run there: "
                           f"{install}.", remote_exit_code=_SETUP_FAILED)
    if reason == "broken":
        return RemoteError(f"{detail} on {target} cannot import edgeship. Reinstall it there: {install}.",
                           remote_exit_code=_SETUP_FAILED)
    if reason == "version":
        return RemoteError(f"{target} has edgeship {detail}, which cannot run with edgeship {edgeship.__version__} "
                           f"here (the major.minor versions must match). Run there: {install}.",
                           remote_exit_code=_SETUP_FAILED)
    return RemoteError(f"Could not {'make a temporary folder' if reason == 'mktemp' else 'unpack the files'} on "
                       f"{target}: is its disk full or its TMPDIR unwritable?", remote_exit_code=_SETUP_FAILED)


def _last_line(lines: list[str], errors_only: bool = False) -> str:
    """The remote error line: the CLI's last ``error: ...`` line, else (unless ``errors_only``)
    the last line."""
    own = [line for line in lines if line.strip() and not line.startswith(_MARK)]
    errors = [line for line in own if line.startswith("error:")]
    return (errors or ([] if errors_only else own) or [""])[-1].strip()


def _first_error(value) -> str:
    """The first ``"error"`` a JSON result carries (a bench row of a model that failed)."""
    if isinstance(value, dict):
        if isinstance(value.get("error"), str):
            return f"{value.get('model', 'error')}: {value['error']}" if "model" in value else value["error"]
        value = list(value.values())
    if isinstance(value, list):
        return next((found for item in value if (found := _first_error(item))), "")
    return ""


def _parse_json(out: bytes) -> dict | None:
    try:
        result = json.loads(out)
    except ValueError:
        return None
    return result if isinstance(result, dict) else None


def _restore_names(value, local: dict[str, str]):
    """``value`` with every mention of a copy (a whole string, a path inside a copied folder, a
    path inside an error message) given back its local name."""
    if not local:
        return value
    # Bounded on both sides, so that "0/data" is not found in "10/data" or "0/data2".
    pattern = re.compile(r"(?<![\w./-])(" + "|".join(map(re.escape, local)) + r")(?![\w.-])")
    return _replace_strings(value, lambda text: pattern.sub(lambda m: local[m.group(1)], text))


def _replace_strings(value, replace):
    if isinstance(value, str):
        return replace(value)
    if isinstance(value, list):
        return [_replace_strings(item, replace) for item in value]
    if isinstance(value, dict):
        return {key: _replace_strings(item, replace) for key, item in value.items()}
    return value
