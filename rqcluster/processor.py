"""Processors in any language: run a program over a unit's items, JSON lines in and out.

The protocol (``docs/protocol.md``): the slave starts the program once per unit, writes
the unit's items to its stdin, one compact JSON document per line, closes stdin, and reads
exactly one JSON document per line from its stdout, in the same order. ``RQCLUSTER_SEED``,
``RQCLUSTER_JOB`` and ``RQCLUSTER_UNIT`` are in its environment. A non-zero exit, a wrong
number of lines, a line that is not JSON, or running past the timeout is a
``ProcessorError`` that carries the tail of the program's stderr.

Two halves:

- submit side, ``prepare_program``: a command line whose executable the slaves have
  (``awk -f x.awk`` with no ``/`` in the first word: looked up on the slave's PATH), or a
  program file named by a path (``./score.sh``), read here and shipped with the job in a
  signed envelope like a function (``rqcluster.enqueue``);
- slave side, ``program_command`` (the command to run, a shipped file written into a
  private 0700 directory only after its signature was checked) and ``run_program``;
  ``run_unit_program`` does both for the unit being run, with its seed.

``run_program`` knows nothing of jobs or Redis: a graph stage can call it as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rqcluster import seeding
from rqcluster.config import DEFAULT_PASSWORD_ENV, current
from rqcluster.errors import InputError, ProcessorError
from rqcluster.secret import SECRET_ENV

PROGRAM_INPUT = "program"          # the job input a shipped program file is stored under
MAX_PROGRAM_BYTES = 64 * 2**20     # a shipped program is a script or a small executable
MAX_OUTPUT_BYTES = 500 * 2**20     # a unit's partial cannot be bigger in Redis anyway
STDERR_TAIL_BYTES = 4096           # the end of stderr kept for the error message
_CHUNK = 1 << 16
_RUNNABLE = (b"#!", b"\x7fELF")    # a script with its interpreter line, or a Linux binary


# --- submit side --------------------------------------------------------------------------

@dataclass(frozen=True)
class PreparedProgram:
    """A program checked at submit: its JSON spec (for the job params) and, when it is
    shipped, the file's bytes (to be sealed and stored as the job input ``program``)."""

    spec: dict[str, Any]
    script: bytes | None = None


def prepare_program(program: str | Sequence[str], what: str = "program") -> PreparedProgram:
    """Check ``program`` (a command line, shlex-split, or an argv list); InputError with a
    message a user can act on if it cannot run. A first word with a ``/`` is a file on
    this machine, shipped with the job; without one, a command on the slaves' PATH."""
    argv = _split(program, what)
    first = argv[0]
    if "/" not in first:
        return PreparedProgram({"argv": argv, "shipped": False, "name": first})
    path = Path(first)
    script = _read_program(path, what)
    return PreparedProgram({"argv": [path.name, *argv[1:]], "shipped": True,
                            "name": path.name}, script)


def _split(program: str | Sequence[str], what: str) -> list[str]:
    if isinstance(program, str):
        try:
            argv = shlex.split(program)
        except ValueError as e:
            raise InputError(f"{what}: cannot split {program!r} into words: {e}") from None
    elif isinstance(program, Sequence) and all(isinstance(a, str) for a in program):
        argv = list(program)
    else:
        raise InputError(f"{what}: expected a command line or a list of strings, got "
                         f"{type(program).__name__}")
    if not argv or not argv[0]:
        raise InputError(f"{what}: the command is empty")
    return argv


def _read_program(path: Path, what: str) -> bytes:
    """The bytes of a program file to ship, once it is known to be runnable."""
    hint = ("(a path is shipped with the job; a command without '/' is looked up on the "
            "slaves' PATH)")
    if not path.exists():
        raise InputError(f"{what}: file not found: {path} {hint}")
    if not path.is_file():
        raise InputError(f"{what}: {path} is not a file {hint}")
    size = path.stat().st_size
    if size > MAX_PROGRAM_BYTES:
        raise InputError(f"{what}: {path} is {size:,} bytes; a shipped program may have "
                         f"{MAX_PROGRAM_BYTES:,} at most (install it on the slaves instead)")
    try:
        script = path.read_bytes()
    except OSError as e:
        raise InputError(f"{what}: cannot read {path}: {e.strerror}") from None
    if not script.startswith(_RUNNABLE):
        raise InputError(f"{what}: {path} has no '#!' line (e.g. #!/bin/sh) and is not an "
                         "executable, so a slave could not run it")
    return script


# --- slave side ---------------------------------------------------------------------------

def unit_environment(job_id: str, index: int, seed: int) -> dict[str, str]:
    """The variables a program gets for unit ``index`` of a job (``seed``: the unit's)."""
    return {"RQCLUSTER_SEED": str(seed), "RQCLUSTER_JOB": job_id,
            "RQCLUSTER_UNIT": str(index)}


def _environment(extra: dict[str, str]) -> dict[str, str]:
    """The slave's environment without its secrets, plus ``extra``."""
    hidden = {SECRET_ENV, DEFAULT_PASSWORD_ENV}
    config = current()
    if config is not None:
        hidden.add(config.redis.password_env)
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env.update(extra)
    return env


@contextlib.contextmanager
def program_command(spec: dict[str, Any], fetch: Callable[[], bytes]
                    ) -> Iterator[tuple[list[str], Path]]:
    """(argv, working directory) to run ``spec``'s program in: a private directory (0700)
    made for this run and removed afterwards. A shipped program is fetched with ``fetch``
    (which verifies its signature, raising if it is not genuine) and written there, 0700,
    before anything runs."""
    workdir = Path(tempfile.mkdtemp(prefix="rqcluster-unit-"))  # mode 0700
    try:
        argv = list(spec["argv"])
        if spec.get("shipped"):
            script = fetch()
            path = workdir / Path(spec["name"]).name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
            with os.fdopen(fd, "wb") as f:
                f.write(script)
            argv[0] = str(path)
        yield argv, workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_unit_program(spec: dict[str, Any], items: list[Any], timeout: float,
                     fetch: Callable[[], bytes]) -> list[Any]:
    """Run ``prepare_program``'s ``spec`` over the items of the unit being run (inside
    ``seeding.unit_context``, as every kind's ``process`` is): its seed, job and index in
    the environment, a shipped file fetched (and verified) with ``fetch``."""
    unit = seeding.current_unit()
    env = unit_environment(unit.job, unit.index, unit.seed)
    with program_command(spec, fetch) as (argv, workdir):
        return run_program(argv, items, env, timeout, cwd=workdir)


def run_program(command: list[str], items: list[Any], env: dict[str, str], timeout: float,
                cwd: str | os.PathLike[str] | None = None) -> list[Any]:
    """Run ``command`` once over ``items`` by the JSON-lines protocol; its answers, in order.

    ``env`` is added to this process's environment (the cluster secret and the Redis
    password are left out). stdin is written by a thread while stdout is read, so a big
    unit cannot deadlock on full pipes. The program (and anything it started in its
    session) is killed once ``timeout`` seconds have passed. ProcessorError, with the
    end of its stderr, if it cannot start, exits non-zero, is killed, writes a line that
    is not JSON, or writes more or fewer lines than it was given items."""
    name = Path(command[0]).name if command else "?"
    data = encode_items(items)
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_environment(env), cwd=cwd,
                                start_new_session=True, close_fds=True)
    except OSError as e:
        raise ProcessorError(_cannot_start(command, e)) from None
    run = _Run(proc, timeout)
    try:
        lines = run.communicate(data)
    finally:
        run.close()
    tail = run.stderr_tail()
    if run.timed_out:
        raise ProcessorError(f"program {name} ran past its timeout of {timeout:g} s and "
                             f"was killed{tail}")
    if run.too_much:
        raise ProcessorError(f"program {name} wrote more than {MAX_OUTPUT_BYTES:,} bytes "
                             f"of output for {len(items)} items and was killed{tail}")
    if proc.returncode != 0:
        raise ProcessorError(f"program {name} {_exit_status(proc.returncode)}{tail}")
    return decode_lines(lines, len(items), name, tail)


def encode_items(items: list[Any]) -> bytes:
    """The items as JSON lines (numpy arrays as lists, numpy scalars as numbers)."""
    out = bytearray()
    for i, item in enumerate(items):
        try:
            line = json.dumps(item, default=_plain, ensure_ascii=False, allow_nan=False,
                              separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise ProcessorError(f"item {i} of the unit cannot be written as JSON: {e}"
                                 ) from None
        out += line.encode()
        out += b"\n"
    return bytes(out)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")


def decode_lines(lines: list[bytes], expected: int, name: str, tail: str = "") -> list[Any]:
    """One JSON value per output line; ProcessorError for a bad line or a wrong count."""
    values = []
    for number, line in enumerate(lines, 1):
        try:
            values.append(json.loads(line))
        except ValueError as e:
            shown = line[:80].decode(errors="replace").rstrip("\n")
            why = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise ProcessorError(f"program {name}: output line {number} is not valid JSON "
                                 f"({why}): {shown!r}{tail}") from None
    if len(values) != expected:
        raise ProcessorError(f"program {name} wrote {len(values)} lines for {expected} items "
                             f"(one JSON line per item, in order){tail}")
    return values


def _cannot_start(command: list[str], e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return (f"program {command[0]!r} not found on this slave (install it on every slave, "
                "or give a path to a file to ship it with the job)")
    if isinstance(e, PermissionError):
        return f"program {command[0]!r} is not executable on this slave"
    return f"program {command[0]!r} cannot be started: {e.strerror or e}"


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class _Run:
    """One running program: a thread feeds stdin, one keeps the end of stderr, a timer
    kills the program's process group at the deadline; the caller reads stdout."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        self.proc = proc
        self.timed_out = False
        self.too_much = False
        self._stderr = bytearray()
        self._timer = threading.Timer(timeout, self._expire)
        self._threads: list[threading.Thread] = []

    def communicate(self, data: bytes) -> list[bytes]:
        self._timer.start()
        self._spawn(self._feed, data)
        self._spawn(self._drain_stderr)
        lines: list[bytes] = []
        left = MAX_OUTPUT_BYTES
        assert self.proc.stdout is not None
        while line := self.proc.stdout.readline(left + 1):
            left -= len(line)
            if left < 0:
                self.too_much = True
                self._kill()
                break
            lines.append(line)
        self.proc.wait()
        return lines

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _feed(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            view = memoryview(data)
            for at in range(0, len(view), _CHUNK):
                self.proc.stdin.write(view[at:at + _CHUNK])
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # it stopped reading (exited, or was killed): its exit status says why

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while chunk := os.read(fd, _CHUNK):
            self._stderr += chunk
            del self._stderr[:-STDERR_TAIL_BYTES]

    def _expire(self) -> None:
        self.timed_out = True
        self._kill()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        self._timer.cancel()
        if self.proc.poll() is None:
            self._kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()

    def stderr_tail(self) -> str:
        """The end of stderr, ready to append to an error message."""
        text = bytes(self._stderr).decode(errors="replace").strip()
        if not text:
            return " (no stderr output)"
        return f"; its stderr ends:\n{text}"
