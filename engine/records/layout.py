"""Placing a flow's DAG on a page: layers top to bottom, computed here so the page fetches no layout library.

A node's layer is the length of the longest path from an input to it, so every edge points
down. Within a layer, nodes are ordered by the mean position of their neighbours (the
barycenter heuristic of Sugiyama-style layouts), sweeping down and up a few times: enough
to untangle the fan-outs and fan-ins that flows are made of, at a cost linear in the edges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx

NODE_WIDTH = 224
H_GAP = 28
V_GAP = 56
MARGIN = 20
SWEEPS = 4


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def top(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y

    @property
    def bottom(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h


Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Layout:
    boxes: dict[str, Box]
    #: Each edge's course to its target's top. An edge to the next layer starts at its source's bottom;
    #: the edges of a node that skip layers share one lane (its `trunks` entry) that runs down beside
    #: the boxes of the layers between, and each leaves it in the layer above its target.
    routes: dict[tuple[str, str], list[Point]]
    #: Per node with edges that skip layers: the lane's course, from the node's bottom down.
    trunks: dict[str, list[Point]]
    width: float
    height: float


DUMMY_WIDTH = 14
DUMMY_GAP = 10


def ranks(g: nx.DiGraph) -> dict[str, int]:
    """Each node's layer: the length of the longest path from a source to it."""
    rank: dict[str, int] = {}
    for name in nx.topological_sort(g):
        rank[name] = max((rank[p] + 1 for p in g.predecessors(name)), default=0)
    return rank


def _with_lanes(g: nx.DiGraph, rank: dict[str, int]) -> tuple[nx.DiGraph, dict[str, int], dict[str, list[str]]]:
    """The graph with, for each node whose edges skip layers, one chain of lane nodes down to the layer
    above its deepest such target. One lane a source, not one an edge: an input that 200 steps name
    is one line with 200 short taps, not 200 lines (the page stays linear in the flow's size)."""
    h: nx.DiGraph = nx.DiGraph()
    h.add_nodes_from(g.nodes)
    r = dict(rank)
    lanes: dict[str, list[str]] = {}
    for u in g.nodes:
        far = [v for v in g.successors(u) if rank[v] - rank[u] > 1]
        if far:
            chain = [f"\x00{u}\x00{k}" for k in range(rank[u] + 1, max(rank[v] for v in far))]
            for k, lane in zip(range(rank[u] + 1, rank[u] + 1 + len(chain)), chain, strict=True):
                r[lane] = k
            nx.add_path(h, [u, *chain])
            lanes[u] = chain
        for v in g.successors(u):
            h.add_edge(lanes[u][rank[v] - rank[u] - 2] if rank[v] - rank[u] > 1 else u, v)
    return h, r, lanes


def _rows(h: nx.DiGraph, rank: dict[str, int]) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for name in h.nodes:
        out[rank[name]].append(name)
    return out
def _order(g: nx.DiGraph, rows: list[list[str]]) -> list[list[str]]:
    """Reorder each layer by the barycenter of its neighbours in the layer above (down sweeps) or below (up sweeps)."""
    position = {name: float(i) for row in rows for i, name in enumerate(row)}

    def sweep(sequence: list[list[str]], neighbours: Callable[[str], list[str]]) -> None:
        for row in sequence:
            def centre(name: str) -> float:
                near = [position[n] for n in neighbours(name)]
                return sum(near) / len(near) if near else position[name]
            row.sort(key=centre)
            for i, name in enumerate(row):
                position[name] = float(i)

    for _ in range(SWEEPS):
        sweep(rows[1:], lambda n: list(g.predecessors(n)))
        sweep(rows[-2::-1], lambda n: list(g.successors(n)))
    return rows


def layout(g: nx.DiGraph, height_of: Callable[[str], float], node_width: Callable[[str], float] | None = None) -> Layout:
    """Boxes for every node of an acyclic graph and a course for every edge; `height_of` gives each node's height,
    `node_width` its width (`NODE_WIDTH` when not given)."""
    h, rank, lanes = _with_lanes(g, ranks(g))
    rows = _order(h, _rows(h, rank))

    def width_of(name: str) -> float:
        if name not in g:
            return DUMMY_WIDTH
        return node_width(name) if node_width is not None else NODE_WIDTH

    def row_width(row: list[str]) -> float:
        return sum(width_of(n) for n in row) + sum(H_GAP if n in g else DUMMY_GAP for n in row[1:])

    width = MARGIN * 2 + max((row_width(row) for row in rows), default=0.0)
    boxes: dict[str, Box] = {}
    y = float(MARGIN)
    for row in rows:
        x = (width - row_width(row)) / 2
        tallest = max((height_of(n) for n in row if n in g), default=0.0)
        for i, name in enumerate(row):
            if i:
                x += H_GAP if name in g else DUMMY_GAP
            boxes[name] = Box(x, y, width_of(name), height_of(name) if name in g else tallest)
            x += width_of(name)
        y += tallest + V_GAP
    trunks: dict[str, list[Point]] = {}
    for u, chain in lanes.items():
        trunks[u] = [boxes[u].bottom, *(p for lane in chain for p in (boxes[lane].top, boxes[lane].bottom))]
    routes: dict[tuple[str, str], list[Point]] = {}
    for u, v in g.edges:
        span = rank[v] - rank[u]
        start = [boxes[lanes[u][span - 2]].bottom] if span > 1 else [boxes[u].bottom]
        routes[(u, v)] = [*start, boxes[v].top]
    return Layout({n: b for n, b in boxes.items() if n in g}, routes, trunks, float(width),
                  y - V_GAP + MARGIN if rows else float(MARGIN * 2))
