"""The search task suite: generation, answer extraction and the Python verifier (no model)."""

from __future__ import annotations

import time

import pytest

from intaglio.bench.search_tasks import KINDS, Task, extract_code, make_tasks, run_function


def _one(kind: str, predicate=lambda t: True) -> Task:
    return next(t for t in make_tasks(60, seed=3, kinds=[kind]) if predicate(t))


def _fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}\n```\n"


def test_the_same_seed_gives_the_same_tasks_and_another_seed_others():
    assert make_tasks(10, seed=7) == make_tasks(10, seed=7)
    assert make_tasks(10, seed=7) != make_tasks(10, seed=8)


def test_a_kinds_tasks_do_not_depend_on_which_other_kinds_are_asked_for():
    alone = make_tasks(5, seed=1, kinds=["string"])
    assert [t for t in make_tasks(5, seed=1) if t.kind == "string"] == alone


def test_tasks_come_per_kind_distinct_and_never_repeat_a_few_shot_example():
    tasks = make_tasks(30, seed=0)
    assert [t.kind for t in tasks] == [k for k in KINDS for _ in range(30)]
    assert len({t.question for t in tasks}) == len(tasks)
    for task in tasks:
        asked = [m["content"] for m in task.messages()[:-1] if m["role"] == "user"]
        assert task.question not in asked


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown task kind"):
        make_tasks(1, kinds=["poetry"])


def test_every_tasks_own_solution_passes_its_check():
    for task in make_tasks(20, seed=5):
        assert task.extract(task.solution) == task.answer
        assert task.check(task.solution)


def test_messages_are_few_shot_chats_ending_in_the_question():
    for kind in KINDS:
        task = _one(kind)
        chat = task.messages()
        assert chat[0]["role"] == "system"
        turns = chat[1:-1]
        assert 3 <= len(turns) // 2 <= 5
        assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert chat[-1] == {"role": "user", "content": task.question}
        if kind != "python":  # every example shows the answer form that extract reads
            assert all("Answer: " in m["content"] for m in turns if m["role"] == "assistant")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: 42", "42"),
        ("12 + 30 = 42\nAnswer: 42.", "42"),
        ("answer:   42  \nThanks!", "42"),
        ("The answer is 1,042", "1042"),
        ("Answer: seven", "7"),
        ("Answer: -5", "-5"),
        ("Answer: 3\nAnswer: 4", "4"),  # the last stated answer counts
        ("42", None),
        ("Answer:", None),
        ("", None),
    ],
)
def test_arithmetic_extraction_normalizes(text, expected):
    assert _one("arithmetic").extract(text) == expected


def test_arithmetic_is_checked_against_the_true_value():
    task = _one("arithmetic")
    a, op, b = task.question.removeprefix("What is ").removesuffix("?").split()
    value = int(a) + int(b) if op == "+" else int(a) - int(b)
    assert task.answer == str(value)
    assert task.check(f"Answer: {value}")
    assert not task.check(f"Answer: {value + 1}")
    assert not task.check("I do not know.")


@pytest.mark.parametrize(
    "text", ['Answer: "Daisy".', "answer:  DAISY", "Answer: `daisy`", "Answer: daisy!"]
)
def test_string_extraction_ignores_case_quotes_and_closing_punctuation(text):
    task = _one("string", lambda t: "alphabet" in t.question)
    assert task.extract(text) == "daisy"


def test_string_answers_are_judged():
    task = _one("string", lambda t: "last letter" in t.question)
    word = task.question.split('"')[1]
    assert task.check(f"Answer: {word[-1].upper()}")
    assert not task.check(f"Answer: {word[0]}" if word[0] != word[-1] else "Answer: 7")
    assert task.extract("The last letter is clear.") is None


def test_python_extraction_takes_the_fenced_function_or_a_bare_def():
    code = "def f(x):\n    return x"
    assert extract_code(_fenced("def g(): pass") + _fenced(code), "f") == code + "\n"
    assert extract_code("Sure.\ndef f(x):\n    return x", "f") == code
    assert extract_code("```python\ndef f(x):\n    return x", "f") == code  # unclosed fence
    assert extract_code("Use x + 1.", "f") is None


def test_python_is_judged_by_its_unit_tests():
    task = _one("python", lambda t: t.function == "scale")
    assert task.check(task.solution)
    body = task.solution.split("return ")[1].split("\n")[0]
    assert task.check(_fenced(f"def scale(x):\n    y = {body}\n    return y"))
    assert not task.check(_fenced(f"def scale(x):\n    return {body} + 1"))
    assert not task.check(_fenced("def scaled(x):\n    return x"))  # the wrong name
    assert not task.check("I cannot write that.")


def test_equivalent_programs_share_a_signature_and_different_ones_do_not():
    task = _one("python", lambda t: t.function == "scale")
    body = task.solution.split("return ")[1].split("\n")[0]
    one = task.extract(_fenced(f"def scale(x):\n    return {body}"))
    other = task.extract(_fenced(f"def scale(x):\n    r = {body}\n    return r"))
    assert one == other == task.answer
    assert task.extract(_fenced("def scale(x):\n    return 0")) != task.answer


def test_prints_and_module_level_junk_do_not_change_the_outcome():
    task = _one("python", lambda t: t.function == "scale")
    body = task.solution.split("return ")[1].split("\n")[0]
    noisy = f'print("junk" * 1000)\ndef scale(x):\n    print("hi", x)\n    return {body}'
    assert task.check(_fenced(noisy))


def test_code_that_raises_fails_and_records_the_error_in_its_signature():
    task = _one("python", lambda t: t.function == "scale")
    answer = task.extract(_fenced("def scale(x):\n    raise ValueError(x)"))
    assert answer is not None and "error: ValueError" in answer
    assert not task.check(_fenced("def scale(x):\n    raise ValueError(x)"))
    assert task.extract(_fenced("def scale(x) return x")) is None  # a syntax error
    assert task.extract(_fenced("import sys\nsys.exit(3)\ndef scale(x):\n    return x")) is None


def test_code_that_loops_forever_is_stopped_and_fails():
    task = _one("python", lambda t: t.function == "scale")
    start = time.monotonic()
    assert task.extract(_fenced("def scale(x):\n    while True:\n        pass")) is None
    assert time.monotonic() - start < 10


def test_the_sandbox_runs_in_another_process():
    # Model code that changes the interpreter it runs in must not change ours.
    outputs = run_function("import os\ndef f():\n    return os.getpid()", "f", ["()"])
    assert outputs is not None and int(outputs[0]) != __import__("os").getpid()
    marker = "def f():\n    import builtins\n    builtins.LEAKED = 1\n    return 1"
    assert run_function(marker, "f", ["()"]) == ["1"]
    assert not hasattr(__import__("builtins"), "LEAKED")
