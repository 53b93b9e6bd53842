"""The child side of the Python sandbox: run an untrusted function on test inputs.

Run as `python -I sandbox_child.py` with a JSON request on stdin ({"code", "name", "args"}); it
writes one JSON object to its original stdout: {"outputs": [...]} or {"error": "..."}. It imports
only the standard library, since it runs isolated from the project. The parent imports
`format_result` so that expected outputs are written exactly as the child writes them.
"""

from __future__ import annotations

import ast
import json
import os
import sys

MAX_REPR = 200  # a function returning something huge still yields a short signature
CPU_SECONDS = 2
MEMORY_BYTES = 1 << 30


def format_result(value: object) -> str:
    """How one test's result reads in a behavioural signature."""
    text = repr(value)
    return text if len(text) <= MAX_REPR else text[:MAX_REPR] + "..."


def _limit_resources() -> None:
    try:
        import resource
    except ImportError:  # not on every platform; the parent's wall-clock timeout still holds
        return
    limits = [
        (resource.RLIMIT_CPU, CPU_SECONDS),
        (resource.RLIMIT_AS, MEMORY_BYTES),
        (resource.RLIMIT_FSIZE, 1 << 20),
        (resource.RLIMIT_NPROC, 0),  # no fork bombs
    ]
    for which, value in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass


def main() -> None:
    request = json.loads(sys.stdin.read())
    # The code's own prints go nowhere; the result goes to a private copy of stdout.
    result_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    _limit_resources()
    reply: dict[str, object]
    try:
        namespace: dict[str, object] = {"__name__": "solution"}
        exec(compile(request["code"], "<solution>", "exec"), namespace)
        function = namespace[request["name"]]
        if not callable(function):
            raise TypeError(f"{request['name']} is not a function")
        outputs = []
        for args in request["args"]:
            try:
                outputs.append(format_result(function(*ast.literal_eval(args))))
            except Exception as e:  # a failing test is an output like any other
                outputs.append(f"error: {type(e).__name__}")
        reply = {"outputs": outputs}
    except BaseException as e:  # the code does not even define the function
        reply = {"error": f"{type(e).__name__}: {e}"}
    os.write(result_fd, json.dumps(reply).encode())


if __name__ == "__main__":
    main()
