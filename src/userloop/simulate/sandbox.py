"""Run untrusted generated code against HumanEval-style tests in a limited subprocess.

What is enforced (see docs/scenarios.md for the full account):

* a fresh temporary directory as the working directory, removed afterwards;
* ``python -I`` (isolated mode) with an empty environment: the caller's variables are not inherited;
* a wall-clock timeout; on expiry, and after every run, the whole process group is killed with SIGKILL;
* kernel resource limits, set by the runner on itself before it reads the generated code (not in a
  ``preexec_fn``, which is unsafe with threads): address space (``RLIMIT_AS``), CPU seconds
  (``RLIMIT_CPU``), file size (``RLIMIT_FSIZE``) and, for a non-root user, the number of
  processes (``RLIMIT_NPROC``: it counts all processes of the user, so the cap is the user's current
  count plus :attr:`SandboxLimits.max_processes`; Linux does not apply it to root);
* when ``unshare`` can make the namespaces (as root or with unprivileged user namespaces; probed
  once): a new network namespace
  (no network) and a new PID namespace whose processes all die with the sandbox;
* a guard, installed before the generated code runs, that makes ``open``/``io.FileIO``/``os`` writes
  outside the directory and process creation (``fork``, ``subprocess``, ``os.system``, ``exec``) raise
  ``PermissionError``. It is a guard, not a jail: code that goes through ``ctypes`` gets past it;
* a verdict the code cannot forge by ordinary means: the runner reports on stdout with a random
  per-run token it reads from stdin (closed before the generated code runs; never in argv, the
  environment or a file) and a pass counts only with exit status 0, so ``sys.exit(0)``, ``os._exit``,
  a printed result line, a redefined ``check`` or a patched ``json``/``builtins`` cannot pass. Code
  written to attack the runner itself (walking the interpreter's frames for the token, ``ctypes``)
  is outside what a guard in the same process can stop.
"""

from __future__ import annotations

import functools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from userloop.errors import UserError

MARK = "@@userloop-sandbox@@ "
_OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class SandboxLimits:
    """The limits of one sandboxed run."""

    timeout_s: float = 10.0
    memory_mb: int = 1024
    cpu_s: int = 10
    file_size_mb: int = 16
    max_processes: int = 32

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "cpu_s", "file_size_mb", "max_processes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UserError(f"sandbox {name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed test run ended: ``status`` is one of ``pass``, ``syntax_error``, ``no_function``,
    ``solution_error``, ``test_failed``, ``test_error``, ``memory``, ``timeout``, ``cpu_limit``,
    ``killed``, ``no_result``; ``detail`` says it in words, ``output`` is the tail of stdout+stderr."""

    status: str
    detail: str
    output: str = ""
    network_isolated: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def run_tests(code: str, tests: str, entry_point: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``check(entry_point)`` from ``tests`` against ``code`` in the sandbox; thread-safe."""
    limits = limits or SandboxLimits()
    prefix = namespace_prefix()
    with tempfile.TemporaryDirectory(prefix="userloop-sandbox-", ignore_cleanup_errors=True) as folder:
        work = Path(folder)
        (work / "solution.py").write_text(code, encoding="utf-8")
        (work / "tests.py").write_text(tests, encoding="utf-8")
        (work / "runner.py").write_text(_RUNNER, encoding="utf-8")
        command = [*prefix, sys.executable, "-I", "-S", "runner.py", entry_point, _limits_argument(limits)]
        token = secrets.token_hex(16)
        with open(work / "output.txt", "wb") as output:
            returncode = _run(command, work, output, limits, token)
        text = (work / "output.txt").read_bytes().decode("utf-8", "replace")
    if returncode is None:
        status, detail = "timeout", f"timeout after {limits.timeout_s:g} s"
    else:
        status, detail = _outcome(text, returncode, limits, token)
    tail = "\n".join(line for line in text.splitlines() if not line.startswith(MARK + token)).strip()[-_OUTPUT_TAIL:]
    return SandboxResult(status, detail, tail, network_isolated="--net" in prefix)


def _run(command: list[str], work: Path, output, limits: SandboxLimits, token: str) -> int | None:
    """The exit status of the sandboxed process, ``None`` when it ran past the timeout. The run's
    token goes through stdin, which the runner reads and closes before the generated code runs."""
    process = subprocess.Popen(
        command, cwd=work, env={}, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        process.stdin.write(token.encode() + b"\n")
        process.stdin.close()
    except BrokenPipeError:
        pass
    try:
        returncode = process.wait(timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        returncode = None
    _kill_group(process)  # on a timeout, and also after an exit: children left behind die with the group
    return returncode


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _limits_argument(limits: SandboxLimits) -> str:
    """The kernel limits the runner sets on itself before it reads the generated code: soft = hard, but
    for CPU time, whose soft limit sends SIGXCPU (the runner reports it) and the hard one, a second
    later, SIGKILL."""
    cpu = math.ceil(limits.cpu_s)
    settings = {"RLIMIT_AS": limits.memory_mb * 1024 * 1024, "RLIMIT_CPU": [cpu, cpu + 1],
                "RLIMIT_FSIZE": limits.file_size_mb * 1024 * 1024, "RLIMIT_CORE": 0}
    if os.geteuid() != 0:
        settings["RLIMIT_NPROC"] = _processes_of_user() + limits.max_processes
    return json.dumps(settings)


def _processes_of_user() -> int:
    """How many processes (threads count too, as for RLIMIT_NPROC) the current user runs now."""
    uid = str(os.getuid())
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [uid]:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count


@functools.cache
def namespace_prefix() -> tuple[str, ...]:
    """The ``unshare`` command that puts the sandbox in new network and PID namespaces, if this
    machine allows it (probed once); ``()`` when it does not (no network isolation then)."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return ()
    options = ["--net", "--pid", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        options.insert(0, "--map-root-user")
    prefix = (unshare, *options)
    try:
        probe = subprocess.run([*prefix, "true"], check=False, env={}, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if probe.returncode == 0 else ()


def _outcome(text: str, returncode: int, limits: SandboxLimits, token: str) -> tuple[str, str]:
    """The runner's own report or, without one, what the exit status says. A report counts only when
    its line carries this run's token (which the generated code never sees) and the runner then
    exited with status 0, so code that prints a result line or exits early cannot fake a pass."""
    lines = [line for line in text.splitlines() if line.startswith(MARK + token + " ")]
    if lines and returncode == 0:
        status, _, detail = lines[-1][len(MARK + token) + 1:].partition(" ")
        try:
            return status, bytes.fromhex(detail).decode("utf-8", "replace")
        except ValueError:
            return "no_result", "the test run's result line was damaged"
    if returncode == -signal.SIGXCPU:
        return "cpu_limit", f"CPU limit of {limits.cpu_s:g} s exceeded"
    if returncode == -signal.SIGXFSZ:
        return "killed", f"file size limit of {limits.file_size_mb} MiB exceeded"
    if returncode < 0:
        return "killed", f"killed by signal {signal.Signals(-returncode).name}"
    return "no_result", "the code exited before the tests finished" + (f" (exit status {returncode})" if returncode else "")


_RUNNER = r'''
import _io, builtins, io, json, os, posix, resource, signal, sys, traceback
MARK = "@@userloop-sandbox@@ "


def make_reporter():
    """The one way to report a result: it holds this run's token (read from stdin, which is then
    closed) and its own references to os.write and os._exit, so the generated code can neither read
    the token from a file, argv or the environment, nor replace what reporting calls."""
    token = sys.stdin.buffer.readline().strip()
    sys.stdin.close()
    os.close(0)
    write, exit_now, prefix = os.write, os._exit, MARK.encode() + token + b" "

    def report(status, detail):
        write(1, b"\n" + prefix + status.encode() + b" " + str(detail).encode("utf-8", "replace").hex().encode() + b"\n")
        exit_now(0)

    return report


def install_guard(root):
    root = os.path.realpath(root)
    allowed = (root, "/dev/null")

    def inside(path):
        if isinstance(path, int):
            return True
        real = os.path.realpath(os.fsdecode(path))
        return real in allowed or real.startswith(root + os.sep)

    def refuse(what, path=None):
        raise PermissionError(f"sandbox: {what} is not allowed" + (f" outside {root}: {path!r}" if path is not None else ""))

    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+") and not inside(file):
            refuse("writing", file)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = _io.open = guarded_open

    class GuardedFileIO(_io.FileIO):
        def __init__(self, file, mode="r", *args, **kwargs):
            if any(flag in mode for flag in "wax+") and not inside(file):
                refuse("writing", file)
            super().__init__(file, mode, *args, **kwargs)

    io.FileIO = _io.FileIO = GuardedFileIO
    real_os_open = os.open
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            refuse("writing", path)
        return real_os_open(path, flags, *args, **kwargs)

    os.open = posix.open = guarded_os_open

    def path_guard(name):
        real = getattr(os, name)

        def guarded(*paths, **kwargs):
            for path in paths[:2] if name in ("rename", "replace", "link", "symlink") else paths[:1]:
                if not inside(path):
                    refuse(name, path)
            return real(*paths, **kwargs)

        return guarded

    for name in ("remove", "unlink", "rmdir", "rename", "replace", "mkdir", "makedirs", "link", "symlink",
                 "chmod", "chown", "truncate", "utime", "mkfifo", "removedirs"):
        if hasattr(os, name):
            guarded = path_guard(name)
            setattr(os, name, guarded)
            if hasattr(posix, name):
                setattr(posix, name, guarded)

    def no_process(*args, **kwargs):
        refuse("starting a process")

    for name in ("fork", "forkpty", "vfork", "system", "popen", "posix_spawn", "posix_spawnp", "execv", "execve",
                 "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl",
                 "spawnle", "spawnlp", "spawnlpe", "spawnvp", "spawnvpe", "kill", "killpg"):
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, no_process)
    import subprocess
    subprocess.Popen = no_process


PLAIN_TYPES = frozenset((int, float, complex, bool, str, bytes, type(None), list, tuple, dict, set, frozenset))


def plain_results(candidate, report):
    """``candidate``, refusing results that are not plain values (exact built-in types, also inside
    containers): an object of the code's own class could make every ``==`` of the tests true."""
    def checked(*args, **kwargs):
        result = candidate(*args, **kwargs)
        pending = [result]
        while pending:
            value = pending.pop()
            kind = type(value)
            if kind not in PLAIN_TYPES:
                report("test_error", f"the function returned a {kind.__name__} object, not a plain value")
            if kind is dict:
                pending.extend(dict.keys(value))
                pending.extend(dict.values(value))
            elif kind in (list, tuple, set, frozenset):
                pending.extend(value)
        return result

    return checked


def failing_assert(error, tests_source):
    lines = tests_source.splitlines()
    for entry in reversed(traceback.extract_tb(error.__traceback__)):
        if entry.filename == "tests.py" and 0 < entry.lineno <= len(lines):
            return lines[entry.lineno - 1].strip()
    return ""


def main():
    report = make_reporter()
    entry_point, limits = sys.argv[1], json.loads(sys.argv[2])
    for name, value in limits.items():
        limit = getattr(resource, name)
        soft, hard = value if isinstance(value, list) else (value, value)
        ceiling = resource.getrlimit(limit)[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(limit, (soft, hard))
    signal.signal(signal.SIGXCPU, lambda *_: report("cpu_limit", f"CPU limit of {limits['RLIMIT_CPU'][0]} s exceeded"))
    solution = open("solution.py", encoding="utf-8").read()
    tests = open("tests.py", encoding="utf-8").read()
    try:
        solution_code = compile(solution, "solution.py", "exec")
    except (SyntaxError, ValueError) as error:
        report("syntax_error", f"syntax error in the code: {error.msg if isinstance(error, SyntaxError) else error}"
               + (f" (line {error.lineno})" if getattr(error, "lineno", None) else ""))
    tests_code = compile(tests, "tests.py", "exec")
    import ast
    asserts = sum(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(tests)))
    install_guard(os.getcwd())
    namespace = {"__name__": "solution"}
    try:
        exec(solution_code, namespace)
    except MemoryError:
        report("memory", "memory limit exceeded while defining the function")
    except BaseException as error:
        report("solution_error", f"the code raised {type(error).__name__}: {error}"[:300])
    candidate = namespace.get(entry_point)
    if not callable(candidate):
        report("no_function", f"the code defines no function {entry_point!r}")
    try:
        exec(tests_code, namespace)
        namespace["check"](plain_results(candidate, report))
    except MemoryError:
        report("memory", "memory limit exceeded during the tests")
    except AssertionError as error:
        line = failing_assert(error, tests)
        report("test_failed", f"a test failed: {line}"[:300] if line else "a test failed")
    except RecursionError:
        report("test_error", "the tests raised RecursionError: maximum recursion depth exceeded")
    except BaseException as error:
        report("test_error", f"the tests raised {type(error).__name__}: {error}"[:300])
    report("pass", f"all tests passed ({asserts} assertions)")


main()
'''
