"""Runtime matching: the vocabulary as bytes and a byte trie, the walks that turn an automaton
state into a token mask, and the matcher a request advances token by token."""
