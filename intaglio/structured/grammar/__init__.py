"""The grammar IR every front end lowers to (ir.py), and the byte automaton built from it, with
a call stack for recursive rules (automaton.py)."""
