"""The `userloop serve` command: a real process answering the openai client, and one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest
from model_helpers import free_port
from typer.testing import CliRunner

from userloop.cli import app

runner = CliRunner()


def assert_user_error(args: list[str], *fragments: str, env: dict | None = None) -> None:
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_serve_process_end_to_end(tiny_model_path):
    port = free_port()
    env = {**os.environ, "TINY_KEY": "sk-do-not-print"}
    command = [sys.executable, "-m", "userloop.cli", "serve", f"hf:{tiny_model_path}", "--port", str(port),
               "--model-name", "tiny", "--api-key-env", "TINY_KEY"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "userloop serve did not become healthy"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        client = openai.OpenAI(api_key="sk-do-not-print", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        response = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=5, temperature=0)
        assert response.choices[0].finish_reason in ("stop", "length") and response.usage.completion_tokens >= 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="nope", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0).models.list()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    assert f"at http://127.0.0.1:{port}/v1" in stderr and "API key required" in stderr
    assert "sk-do-not-print" not in stdout + stderr


def test_serve_errors(tmp_path, tiny_model_path):
    assert_user_error(["serve", "gpt-4o"], "unknown model spec", "hf:")
    assert_user_error(["serve", "openai:m@http://127.0.0.1:1/v1"], "hf: or scripted:")
    assert_user_error(["serve", f"hf:{tmp_path / 'missing'}", "--port", "0"], "no such model folder")
    assert_user_error(["serve", f"hf:{tiny_model_path}", "--port", "70000"], "--port")
    assert_user_error(["serve", f"hf:{tiny_model_path}", "--api-key-env", "UNSET_KEY_VAR"], "UNSET_KEY_VAR",
                      env={"UNSET_KEY_VAR": ""})
    assert_user_error(["serve", f"hf:{tiny_model_path}", "--api-key-env", "A", "--api-key", "b"], "not both")
    assert_user_error(["serve", f"hf:{tiny_model_path}", "--dtype", "int4", "--port", "0"], "dtype")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert_user_error(["serve", f"scripted:{bad}", "--port", "0"], "not valid JSON")
    # checked before the model loads
    assert_user_error(["serve", f"scripted:{bad}", "--port", "0", "--allowed-host", "http://box"],
                      "--allowed-host takes")
    assert_user_error(["serve", f"scripted:{bad}", "--port", "0", "--allowed-origin", "localhost:3000"],
                      "--allowed-origin takes", "http://localhost:3000")


def test_busy_port(write_json):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert_user_error(["serve", f"scripted:{write_json(['x'])}", "--port", str(port)], "cannot listen", str(port))


def test_serve_help(wide_cli):
    result = wide_cli.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--api-key-env", "--api-key", "--model-name", "--max-batch-size",
                   "--allowed-host", "--allowed-origin"):
        assert option in result.stdout
