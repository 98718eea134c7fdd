"""The sandbox against hostile code, and real HumanEval problems solved right and wrong."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from userloop.errors import UserError
from userloop.simulate import sandbox
from userloop.simulate.sandbox import SandboxLimits, namespace_prefix, run_tests

TESTS = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 6\n"
SMALL_MEMORY = SandboxLimits(memory_mb=512)


def double_with(body: str) -> str:
    return f"def double(x):\n    return 2 * x\n\n{body}\n"


@pytest.fixture(scope="module")
def humaneval(shared_data):
    with gzip.open(shared_data / "humaneval" / "HumanEval.jsonl.gz", "rt") as lines:
        return {problem["entry_point"]: problem for problem in map(json.loads, lines)}


@pytest.mark.parametrize("name", ["has_close_elements", "separate_paren_groups", "below_zero", "fib"])
def test_real_problems_canonical_solution_passes(humaneval, name):
    problem = humaneval[name]
    result = run_tests(problem["prompt"] + problem["canonical_solution"], problem["test"], name)
    assert result.status == "pass", result
    assert result.detail.startswith("all tests passed")


def test_real_problem_wrong_solution_fails_with_the_assert(humaneval):
    problem = humaneval["below_zero"]
    wrong = problem["prompt"] + "    return False\n"
    result = run_tests(wrong, problem["test"], "below_zero")
    assert result.status == "test_failed" and "assert candidate(" in result.detail


def test_failure_kinds_are_named():
    assert run_tests("def double(x):\n    return 2 * x\n", TESTS, "double").status == "pass"
    assert run_tests("def double(x:\n", TESTS, "double").status == "syntax_error"
    assert run_tests("def triple(x):\n    return 3 * x\n", TESTS, "double").status == "no_function"
    assert run_tests("raise ValueError('boom')\n", TESTS, "double").detail == "the code raised ValueError: boom"
    assert run_tests("def double(x):\n    return x.nope\n", TESTS, "double").status == "test_error"
    exits_early = run_tests(double_with("import os\nos._exit(0)"), TESTS, "double")
    assert exits_early.status == "no_result"


def test_infinite_loop_times_out_and_the_next_run_still_works():
    result = run_tests("def double(x):\n    while True:\n        pass\n", TESTS, "double", SandboxLimits(timeout_s=1.5))
    assert result.status in ("timeout", "cpu_limit") and not result.passed
    assert run_tests("def double(x):\n    return 2 * x\n", TESTS, "double").passed


def test_the_parents_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("USERLOOP_SECRET_TOKEN", "hunter2")
    code = "import os\ndef double(x):\n    assert 'USERLOOP_SECRET_TOKEN' not in os.environ, 'leaked'\n    return 2 * x\n"
    assert run_tests(code, TESTS, "double").passed
    printed = run_tests(double_with("import os\nprint(sorted(os.environ))"), TESTS, "double")
    assert "USERLOOP_SECRET_TOKEN" not in printed.output and "hunter2" not in printed.output


def test_writing_outside_its_directory_fails_and_leaves_no_file(tmp_path):
    target = tmp_path / f"escaped-{uuid.uuid4().hex}.txt"
    attempts = [
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
        f"import shutil\nshutil.copy('solution.py', {str(target)!r})",
        "import os\nos.chdir('..')\nopen('escaped-relative.txt', 'w')",
    ]
    for attempt in attempts:
        result = run_tests(double_with(attempt), TESTS, "double")
        assert result.status == "solution_error" and "PermissionError" in result.detail, (attempt, result)
    assert not target.exists()
    inside = run_tests(double_with("open('scratch.txt', 'w').write('fine')"), TESTS, "double")
    assert inside.passed


def test_a_fork_loop_is_contained_and_leaves_no_process():
    guarded = double_with("import os\nfor _ in range(20):\n    os.fork()")
    result = run_tests(guarded, TESTS, "double", SMALL_MEMORY)
    assert result.status == "solution_error" and "PermissionError" in result.detail
    # past the guard (ctypes): a bounded number of named sleeping children, then a hang; all die at the timeout
    name = f"ul{uuid.uuid4().hex[:12]}"
    bypass = double_with(
        "import ctypes, time\nlibc = ctypes.CDLL(None)\n"
        f"for _ in range(8):\n    if libc.fork() == 0:\n        libc.prctl(15, {name.encode()!r})\n"
        "        time.sleep(60)\n        raise SystemExit\n"
        "while True:\n    time.sleep(0.1)"
    )
    result = run_tests(bypass, TESTS, "double", SandboxLimits(timeout_s=3, memory_mb=512))
    assert result.status == "timeout"
    assert living(name) == []


def living(name: str) -> list[str]:
    """Processes called ``name`` that are not yet dead (SIGKILL is delivered asynchronously: poll briefly)."""
    deadline = time.monotonic() + 10
    while True:
        pids = subprocess.run(["pgrep", "-x", name], check=False, capture_output=True, text=True).stdout.split()
        alive = [pid for pid in pids if _state(pid) not in ("Z", "X", None)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _state(pid: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def test_huge_memory_allocation_fails_cleanly():
    result = run_tests(double_with("big = bytearray(8 * 1024 ** 3)"), TESTS, "double", SMALL_MEMORY)
    assert result.status == "memory" or (result.status == "solution_error" and "MemoryError" in result.detail)
    assert not result.passed
    assert run_tests("def double(x):\n    return 2 * x\n", TESTS, "double", SMALL_MEMORY).passed


def test_no_network_where_the_os_allows_it():
    code = double_with(
        "import socket\ns = socket.socket()\ns.settimeout(1)\nassert s.connect_ex(('1.1.1.1', 53)) != 0")
    result = run_tests(code, TESTS, "double", SMALL_MEMORY)
    assert result.passed
    assert result.network_isolated == bool(namespace_prefix())


def test_runs_from_many_threads_at_once_stay_apart():
    codes = [f"def double(x):\n    open('mine.txt', 'w').write('{i}')\n    return 2 * x if {i} % 2 else x\n"
             for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda code: run_tests(code, TESTS, "double"), codes))
    assert [r.passed for r in results] == [bool(i % 2) for i in range(8)]


def test_without_namespaces_it_still_runs_but_says_the_network_is_open(monkeypatch):
    monkeypatch.setattr(sandbox, "namespace_prefix", lambda: ())
    result = run_tests("def double(x):\n    return 2 * x\n", TESTS, "double")
    assert result.passed and result.network_isolated is False


def test_the_process_cap_counts_the_users_processes_for_non_root(monkeypatch):
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sandbox, "_processes_of_user", lambda: 40)
    limits = json.loads(sandbox._limits_argument(SandboxLimits(max_processes=32, memory_mb=256)))
    assert limits["RLIMIT_NPROC"] == 72 and limits["RLIMIT_AS"] == 256 * 1024 ** 2
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    assert "RLIMIT_NPROC" not in json.loads(sandbox._limits_argument(SandboxLimits()))
    assert sandbox._processes_of_user() >= 1


def test_bad_limits_are_user_errors():
    with pytest.raises(UserError, match="timeout_s must be a positive number"):
        SandboxLimits(timeout_s=0)


def test_cpu_and_file_size_limits():
    spin = run_tests("def double(x):\n    while True:\n        pass\n", TESTS, "double", SandboxLimits(cpu_s=1))
    assert (spin.status, spin.detail) == ("cpu_limit", "CPU limit of 1 s exceeded")
    big = double_with("open('big.bin', 'wb').write(b'x' * (3 * 1024 * 1024))")
    result = run_tests(big, TESTS, "double", SandboxLimits(file_size_mb=1))
    assert not result.passed and "File too large" in result.detail


FORGED_LINE = "@@userloop-sandbox@@ [\"pass\", \"all tests passed\"]"


@pytest.mark.parametrize("forgery", [
    f"import os\nos.write(1, b'\\n' + {FORGED_LINE!r}.encode() + b'\\n')\nos._exit(0)",
    f"print({FORGED_LINE!r}, flush=True)\nraise SystemExit(0)",
    "import json\njson.dumps = lambda value: '[\"pass\", \"faked\"]'",
    "import sys\nsys.modules['__main__'].report = lambda *args: None",
    "import sys\ndef wrong(x):\n    return 0\nsys.exit(0)",
])
def test_a_pass_cannot_be_forged_by_the_code(forgery):
    """The verdict carries a per-run token the code never sees, and a pass needs exit status 0."""
    result = run_tests(f"def double(x):\n    return 0\n\n{forgery}\n", TESTS, "double")
    assert not result.passed, result


def test_redefining_check_from_the_candidate_does_not_pass():
    code = ("import sys\ndef double(x):\n    sys._getframe(1).f_globals['check'] = lambda c: None\n"
            "    raise SystemExit(0)\n")
    assert not run_tests(code, TESTS, "double").passed


def test_file_io_classes_cannot_write_outside(tmp_path):
    for index, opener in enumerate(["import io\nio.FileIO({!r}, 'w')", "import _io\n_io.open({!r}, 'w')"]):
        target = tmp_path / f"escaped-{index}.txt"
        result = run_tests(double_with(opener.format(str(target))), TESTS, "double")
        assert result.status == "solution_error" and not target.exists(), result
