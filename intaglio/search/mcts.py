"""Monte Carlo tree search over reasoning steps.

Each iteration selects a leaf by UCT (mean value plus `exploration * sqrt(ln N_parent / N)`),
expands it with `expand` sampled next steps (forks of its KV, one gen), scores them with the
value function, and backs each value up the path. The answer is the completed branch of highest
value; a budget that runs out returns the best branch seen so far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from intaglio.search.program import Branch, Search
from intaglio.search.scorers import Scorer
from intaglio.search.step_search import STEP_DELIMITERS, expand_steps, is_complete


@dataclass
class Node:
    branch: Branch
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    complete: bool = False

    def uct(self, exploration: float) -> float:
        if self.visits == 0:
            return math.inf
        assert self.parent is not None
        explore = exploration * math.sqrt(math.log(self.parent.visits) / self.visits)
        return self.value_sum / self.visits + explore


def select_leaf(root: Node, exploration: float) -> Node | None:
    """Descend by UCT through incomplete children to a node to expand (None: nothing can be
    generated from the root). A node whose children are all complete gets more siblings."""
    node = root
    while node.children:
        open_children = [c for c in node.children if not c.complete]
        if not open_children:
            break
        node = max(open_children, key=lambda c: c.uct(exploration))
    return None if node.complete else node


def backup(node: Node | None, value: float) -> None:
    while node is not None:
        node.visits += 1
        node.value_sum += value
        node = node.parent


async def mcts(
    s: Search,
    root: Branch,
    value: Scorer,
    iterations: int = 16,
    expand: int = 3,
    exploration: float = 1.0,
    delimiters: Sequence[str] = STEP_DELIMITERS,
    **sampling: Any,
) -> Branch | None:
    tree = Node(root)
    scored: list[tuple[float, Node]] = []
    for _ in range(iterations):
        leaf = select_leaf(tree, exploration)
        if leaf is None or s.exhausted:
            break
        children = await expand_steps(s, [(leaf.branch, expand)], delimiters, sampling)
        for branch in children:
            child = Node(branch, leaf, complete=is_complete(branch, delimiters))
            leaf.children.append(child)
            v = await value(s, branch)
            scored.append((v, child))
            backup(child, v)
        if not leaf.children:  # nothing could be generated here: do not select it again
            leaf.complete = True
    complete = [(v, n) for v, n in scored if n.complete]
    pool = complete or scored
    return max(pool, key=lambda vn: vn[0])[1].branch if pool else None
