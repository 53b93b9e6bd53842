"""A generated task suite with checkable answers, for benchmarking search (best-of-N, voting).

Three kinds, each asked few-shot so the default model answers in a form we can read back:
arithmetic and string questions end in "Answer: ...", Python tasks in a fenced function that
unit tests judge. `Task.extract` gives the normalized answer a completion states (for voting:
equal answers give equal strings; for Python, the function's outputs on the tests, so equivalent
programs vote together), and `Task.check` is the verifier. Everything is generated from a seed.
"""

from __future__ import annotations

import ast
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from intaglio.bench import sandbox_child

KINDS = ("arithmetic", "string", "python")
PYTHON_TIMEOUT_S = 5.0  # wall clock; the child also has a CPU limit

_ANSWER = re.compile(r"answer\s*(?:is\s*:?|[:=])\s*(.*)", re.IGNORECASE)  # to the line's end
_CODE_BLOCK = re.compile(r"```[a-zA-Z]*\n(.*?)(?:```|$)", re.DOTALL)
_SMALL_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()


@dataclass(frozen=True)
class Task:
    kind: str
    question: str
    answer: str  # canonical and normalized: what `extract` gives for a right completion
    solution: str  # a completion that solves the task, in the form the few-shot examples use
    function: str = ""  # python: the name of the function asked for
    tests: tuple[str, ...] = ()  # python: argument tuples, as Python literals

    def messages(self) -> list[dict[str, str]]:
        """The chat to send: instructions, solved examples of this kind, then the question."""
        chat = [{"role": "system", "content": _SYSTEM[self.kind]}]
        for question, solution in _EXAMPLES[self.kind]:
            chat.append({"role": "user", "content": question})
            chat.append({"role": "assistant", "content": solution})
        chat.append({"role": "user", "content": self.question})
        return chat

    def extract(self, text: str) -> str | None:
        """The normalized answer `text` gives, or None when it gives none."""
        if self.kind == "python":
            return self._python_signature(text)
        found = _ANSWER.findall(text)
        return (_normalize(found[-1]) or None) if found else None

    def check(self, text: str) -> bool:
        """The verifier: whether `text` solves the task (for Python: passes the unit tests)."""
        return self.extract(text) == self.answer

    def _python_signature(self, text: str) -> str | None:
        code = extract_code(text, self.function)
        if code is None:
            return None
        outputs = run_function(code, self.function, self.tests)
        return None if outputs is None else _signature(outputs)


def make_tasks(num_per_kind: int, seed: int = 0, kinds: Sequence[str] = KINDS) -> list[Task]:
    """`num_per_kind` distinct tasks of each kind, the same for the same seed."""
    tasks = []
    for kind in kinds:
        if kind not in _GENERATORS:
            raise ValueError(f"unknown task kind {kind!r}; choose from {KINDS}")
        rng = random.Random(f"{seed}:{kind}")  # a kind's tasks do not depend on the others
        taken = {question for question, _ in _EXAMPLES[kind]}
        made = 0
        for _ in range(num_per_kind * 100):
            if made == num_per_kind:
                break
            task = _GENERATORS[kind](rng)
            if task.question not in taken:
                taken.add(task.question)
                tasks.append(task)
                made += 1
        else:
            raise ValueError(f"cannot make {num_per_kind} distinct {kind} tasks")
    return tasks


def _normalize(text: str) -> str:
    """Case, spaces, quotes and closing punctuation do not change an answer; nor 'seven' vs '7'."""
    text = " ".join(text.lower().split())
    text = text.strip(" \t.!,;:\"'`*")
    if text in _SMALL_NUMBERS:
        return str(_SMALL_NUMBERS.index(text))
    number = re.fullmatch(r"[-+]?\d[\d,]*", text)
    if number:
        return str(int(text.replace(",", "")))
    return text


# ---- Python: extraction and the sandbox -------------------------------------------------------


def extract_code(text: str, function: str) -> str | None:
    """The code in `text` that defines `function`: a fenced block, else from its `def` on."""
    for block in _CODE_BLOCK.findall(text):
        if re.search(rf"^\s*def {re.escape(function)}\s*\(", block, re.MULTILINE):
            return str(block)
    start = re.search(rf"^def {re.escape(function)}\s*\(", text, re.MULTILINE)
    return text[start.start() :] if start else None


def run_function(code: str, function: str, tests: Sequence[str]) -> list[str] | None:
    """`function`'s outputs on each test, run in a separate, limited interpreter.

    None when the code does not define it, crashes the interpreter, or runs out of time.
    """
    request = json.dumps({"code": code, "name": function, "args": list(tests)})
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", str(Path(sandbox_child.__file__))],
            input=request.encode(),
            capture_output=True,
            timeout=PYTHON_TIMEOUT_S,
        )
        reply = json.loads(done.stdout)
    except (subprocess.TimeoutExpired, ValueError):
        return None
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    return [str(o) for o in outputs] if isinstance(outputs, list) else None


def _signature(outputs: Sequence[str]) -> str:
    return "[" + ", ".join(outputs) + "]"


# ---- arithmetic -------------------------------------------------------------------------------


def _arithmetic(rng: random.Random) -> Task:
    """Two-digit additions and subtractions with a result of at least zero."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    op = rng.choice("+-")
    if op == "-" and a < b:
        a, b = b, a
    value = a + b if op == "+" else a - b
    return Task("arithmetic", f"What is {a} {op} {b}?", str(value), _worked(a, op, b))


def _worked(a: int, op: str, b: int) -> str:
    # Restating the sum before the result helps a small model more than a bare answer does.
    value = a + b if op == "+" else a - b
    return f"{a} {op} {b} = {value}\nAnswer: {value}"


# ---- strings ----------------------------------------------------------------------------------

_WORDS = (
    "apple banana cherry garden window pencil rocket silver planet orange market basket "
    "dragon button candle forest guitar hammer island jacket kitten ladder mirror needle "
    "pepper rabbit saddle tunnel velvet wagon yellow zipper monkey bottle castle flower"
).split()


def _string(rng: random.Random) -> Task:
    """Letters of a word (which tokenizers hide from a model) and alphabetical order."""
    word = rng.choice(_WORDS)
    op = rng.choice(("first", "last", "count", "alphabet"))
    if op == "first":
        question, value = f'What is the first letter of "{word}"?', word[0]
    elif op == "last":
        question, value = f'What is the last letter of "{word}"?', word[-1]
    elif op == "count":
        letter = rng.choice("aeiou")
        question = f'How many times does the letter "{letter}" appear in "{word}"?'
        value = str(word.count(letter))
    else:
        words = rng.sample(_WORDS, 3)
        question = f'Which of "{" ".join(words)}" comes first in the alphabet?'
        value = min(words)
    return Task("string", question, value, f"Answer: {value}")


# ---- Python functions -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    """A kind of small function, with constants drawn per task."""

    name: str
    params: str
    describe: str  # what it returns, formatted with the constants
    body: str  # the reference body, formatted with the constants
    constants: Callable[[random.Random], dict[str, object]]
    inputs: Callable[[random.Random], tuple[object, ...]]


def _ints(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(-9, 20) for _ in range(n)]


def _letter(rng: random.Random) -> dict[str, object]:
    return {"c": rng.choice("aeinorst")}


# Mostly functions the default model gets wrong at first but right in some samples; two it
# usually gets right.
_FAMILIES = (
    _Family(
        "scale",
        "x",
        "x times {a} plus {b}",
        "return x * {a} + {b}",
        lambda r: {"a": r.randint(2, 9), "b": r.randint(1, 9)},
        lambda r: (r.randint(-10, 30),),
    ),
    _Family(
        "count_above",
        "xs",
        "how many numbers in the list xs are greater than {a}",
        "return sum(1 for x in xs if x > {a})",
        lambda r: {"a": r.randint(0, 10)},
        lambda r: (_ints(r, r.randint(0, 6)),),
    ),
    _Family(
        "repeat",
        "s",
        "the string s repeated {a} times",
        "return s * {a}",
        lambda r: {"a": r.randint(2, 6)},
        lambda r: (r.choice(("ab", "x", "", "hey", "12", "go")),),
    ),
    _Family(
        "clamp",
        "x",
        "x limited to the range {a} to {b} (values below {a} become {a}, above {b} become {b})",
        "return min(max(x, {a}), {b})",
        lambda r: {"a": r.randint(0, 5), "b": r.randint(10, 20)},
        lambda r: (r.randint(-10, 30),),
    ),
    _Family(
        "count_letter",
        "s",
        'how many times the letter "{c}" appears in the string s',
        "return s.count('{c}')",
        _letter,
        lambda r: (r.choice(_WORDS),),
    ),
    _Family(
        "remove_letter",
        "s",
        'the string s with every "{c}" removed',
        "return s.replace('{c}', '')",
        _letter,
        lambda r: (r.choice(_WORDS),),
    ),
    _Family(
        "count_digit",
        "n",
        "how many times the digit {a} appears in the non-negative integer n",
        "return str(n).count('{a}')",
        lambda r: {"a": r.randint(0, 9)},
        lambda r: (r.randint(0, 99999),),
    ),
    _Family(
        "sum_multiples",
        "xs",
        "the sum of the numbers in the list xs that are divisible by {a}",
        "return sum(x for x in xs if x % {a} == 0)",
        lambda r: {"a": r.randint(2, 5)},
        lambda r: (_ints(r, r.randint(0, 6)),),
    ),
    _Family(
        "first_n",
        "xs",
        "a list of the first {a} items of the list xs",
        "return xs[:{a}]",
        lambda r: {"a": r.randint(1, 4)},
        lambda r: (_ints(r, r.randint(0, 6)),),
    ),
)
_NUM_TESTS = 5


def _python(rng: random.Random) -> Task:
    family = rng.choice(_FAMILIES)
    constants = family.constants(rng)
    source = f"def {family.name}({family.params}):\n    {family.body.format(**constants)}\n"
    tests: list[str] = []
    for _ in range(20 * _NUM_TESTS):  # distinct inputs, as far as the family has them
        test = repr(family.inputs(rng))
        if test not in tests:
            tests.append(test)
        if len(tests) == _NUM_TESTS:
            break
    question = (
        f"Write a Python function `{family.name}({family.params})` that returns "
        f"{family.describe.format(**constants)}."
    )
    return _python_task(question, family.name, source, tuple(tests))


def _python_task(question: str, function: str, source: str, tests: tuple[str, ...]) -> Task:
    """A Python task whose answer is the reference's outputs, computed here: the source is ours."""
    namespace: dict[str, Callable[..., object]] = {}
    exec(source, namespace)
    reference = namespace[function]
    outputs = [sandbox_child.format_result(reference(*ast.literal_eval(t))) for t in tests]
    return Task("python", question, _signature(outputs), f"```python\n{source}```", function, tests)


_GENERATORS: dict[str, Callable[[random.Random], Task]] = {
    "arithmetic": _arithmetic,
    "string": _string,
    "python": _python,
}

# ---- prompts ----------------------------------------------------------------------------------

_SYSTEM = {
    "arithmetic": "You are a careful calculator. Work out the result exactly and end your reply "
    'with a line of the form "Answer: <number>".',
    "string": "You answer questions about the letters of words. Look at each letter carefully "
    'and end your reply with a line of the form "Answer: <answer>".',
    "python": "You write short, correct Python functions. Reply with only the function, in a "
    "```python code block.",
}


_EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {  # (question, solution) pairs
    "arithmetic": tuple(
        (f"What is {a} {op} {b}?", _worked(a, op, b))
        for a, op, b in ((34, "+", 58), (71, "-", 26), (19, "+", 47), (83, "-", 40))
    ),
    "string": (
        ('How many times does the letter "o" appear in "cocoon"?', "Answer: 3"),
        ('What is the last letter of "tiger"?', "Answer: r"),
        ('What is the first letter of "lemon"?', "Answer: l"),
        ('Which of "tulip daisy rose" comes first in the alphabet?', "Answer: daisy"),
        ('How many times does the letter "e" appear in "kettle"?', "Answer: 2"),
    ),
    "python": (
        (
            "Write a Python function `double_all(xs)` that returns a new list with every "
            "number in the list xs doubled.",
            "```python\ndef double_all(xs):\n    return [x * 2 for x in xs]\n```",
        ),
        (
            "Write a Python function `is_even(n)` that returns True when n is even, else False.",
            "```python\ndef is_even(n):\n    return n % 2 == 0\n```",
        ),
        (
            "Write a Python function `first_word(s)` that returns the first word of the string s.",
            "```python\ndef first_word(s):\n    return s.split()[0]\n```",
        ),
    ),
}
