"""Tagged JSON blocks after free text (spec.TaggedJson) as grammar IR.

The output is

    text ( begin "\n"? json "\n"? end ( "\n"? begin "\n"? json "\n"? end )* "\n"? )?

where `text` is any UTF-8 text in which `begin` does not occur and `json` a value of the
schema (json_schema/), then the end of the output: a model may answer in words, or in words
followed by calls that are valid by construction, never a call whose JSON breaks its schema.
"""

from __future__ import annotations

import json

from intaglio.structured.grammar.ir import (
    Grammar,
    GrammarError,
    Node,
    Ref,
    Repeat,
    alt,
    char_class,
    literal,
    negate_ranges,
    opt,
    seq,
)
from intaglio.structured.json_schema.compiler import JsonSchemaCompiler
from intaglio.structured.spec import TaggedJson

_START = "tagged_output"  # a name the JSON Schema compiler never gives a rule
_NEWLINE = opt(literal("\n"))


def tagged_json_grammar(tagged: TaggedJson, whitespace: str) -> Grammar:
    schema = json.loads(tagged.schema) if isinstance(tagged.schema, str) else tagged.schema
    value = JsonSchemaCompiler(schema, whitespace).compile()
    rules = dict(value.rules)
    block = seq(literal(tagged.begin), _NEWLINE, Ref(value.start), _NEWLINE, literal(tagged.end))
    more = None if tagged.max_blocks is None else tagged.max_blocks - 1
    blocks = seq(block, Repeat(seq(_NEWLINE, block), 0, more), _NEWLINE)
    rules[_START] = seq(text_without(tagged.begin), opt(blocks))
    return Grammar(rules, _START)


def text_without(word: str) -> Node:
    """UTF-8 text in which `word` does not occur.

    Needs the word's first character not to occur again in it (true of tags such as
    `<tool_call>`): the text is then a run of other characters, and after each occurrence of
    that first character, a proper prefix of the word's rest, possibly followed by a
    character that leaves the word and more characters other than the first.
    """
    first, rest = word[0], word[1:]
    if not rest or first in rest:
        raise GrammarError(
            f"cannot exclude {word!r} from free text: its first character must occur only once"
        )
    c = ord(first)
    others = Repeat(char_class(negate_ranges([(c, c)])), 0, None)
    after = []
    for j, ch in enumerate(rest):
        leave = char_class(negate_ranges([(c, c), (ord(ch), ord(ch))]))
        after += [literal(rest[:j]), seq(literal(rest[:j]), leave, others)]
    return seq(others, Repeat(seq(literal(first), alt(*after)), 0, None))
