"""`intaglio chat`: talk to a model through its chat template, one-shot or as a prompt loop.

intaglio chat "What is the capital of France?"      # answer once, then exit
intaglio chat                                        # a loop: /reset clears the history,
                                                     # /exit or end of input (Ctrl-D) leaves
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from intaglio.cli.args import add_engine_flags, add_sampling_flags, load_llm

PROMPT = ">>> "


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "chat",
        help="chat with a model (one-shot with MESSAGE, else interactive)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("message", nargs="?", help="answer this one message and exit")
    p.add_argument("--system", help="a system message that opens the conversation")
    add_engine_flags(p)
    add_sampling_flags(p)
    p.set_defaults(func=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    loaded = load_llm(args)
    if loaded is None:
        return 2
    llm, params = loaded
    opening = [{"role": "system", "content": args.system}] if args.system else []
    history = list(opening)
    if args.message is not None:
        return 0 if _answer(llm, params, history, args.message, sys.stdout) else 1
    interactive = sys.stdin.isatty()
    if interactive:
        print("Chatting; /reset clears the history, /exit or Ctrl-D leaves.", file=sys.stderr)
    while True:
        try:
            line = input(PROMPT if interactive else "")
        except EOFError:
            if interactive:
                print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 0
        message = line.strip()
        if not message:
            continue
        if message in ("/exit", "/quit"):
            return 0
        if message == "/reset":
            history = list(opening)
            print("(history cleared)", file=sys.stderr)
            continue
        if not _answer(llm, params, history, message, sys.stdout):
            history.pop()  # the failed turn does not stay in the conversation


def _answer(
    llm: Any, params: Any, history: list[dict[str, str]], message: str, out: TextIO
) -> bool:
    """Stream the assistant's answer to `message`; on success both join the history."""
    history.append({"role": "user", "content": message})
    try:
        prompt = llm.chat_prompt(history)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    shown = 0
    final = None
    try:
        for partial in llm.stream(prompt, params):
            final = partial
            if partial.error is not None:
                break
            text = partial.outputs[0].text
            out.write(text[shown:])
            out.flush()
            shown = len(text)
    except KeyboardInterrupt:  # stop this answer; the conversation goes on without it
        out.write("\n")
        return False
    out.write("\n")
    out.flush()
    if final is None or final.error is not None:
        print(f"error: {final.error if final else 'no output'}", file=sys.stderr)
        return False
    history.append({"role": "assistant", "content": final.outputs[0].text})
    return True
