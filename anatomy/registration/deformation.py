"""Embedded deformation graph (Sumner, Schmid & Pauly, "Embedded deformation for shape
manipulation", SIGGRAPH 2007): nodes on a surface, each carrying an affine map, blended at the
vertices; with the paper's rigidity and smoothness regularisers.

Node ``j`` at ``g_j`` carries ``(A_j, t_j)`` and moves a point ``v`` to ``A_j (v - g_j) + g_j + t_j``;
a vertex is moved by the weighted sum over its ``k`` nearest nodes, with the paper's weights
``(1 - |v - g_j| / d_max)^2`` (``d_max`` the distance to the ``(k+1)``-th nearest node), normalised.
Here ``A_j = I + D_j`` so that zero parameters are the identity.

Everything is torch on the vertices' device and dtype; the neighbour *searches* run in
:func:`anatomy.core.nearest.knn` (a KD-tree on CPU copies; only indices travel back).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.checks import check_shape, check_tensor
from ..core.errors import ParameterError, ShapeError
from ..core.nearest import knn


@dataclass(frozen=True)
class DeformationGraph:
    """Nodes, vertex-to-node blend weights and node edges of an embedded deformation.

    Attributes:
        nodes: ``(G, 3)`` node positions ``g`` (a subset of the vertices).
        node_vertex: ``(G,)`` int64, the vertex each node sits on.
        vertex_nodes: ``(V, k)`` int64, the nodes that move each vertex.
        vertex_weights: ``(V, k)`` blend weights, each row sums to 1.
        edges: ``(E, 2)`` int64 directed node pairs ``(j, k)``, both directions present.
    """

    nodes: torch.Tensor
    node_vertex: torch.Tensor
    vertex_nodes: torch.Tensor
    vertex_weights: torch.Tensor
    edges: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.shape[0])


def farthest_point_sampling(points: torch.Tensor, count: int, start: int = 0) -> torch.Tensor:
    """Indices ``(count,)`` of ``points (P, 3)`` chosen greedily, each the farthest from those chosen.

    Deterministic (starts at ``start``); runs on the points' device without host syncs in the loop.
    """
    check_shape(check_tensor(points, "points"), "points", [None, 3])
    n = points.shape[0]
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= n:
        raise ParameterError(f"count must be an int in [1, {n}] (the number of points), got {count!r}.")
    pts = points.detach()
    chosen = torch.empty(count, dtype=torch.long, device=pts.device)
    chosen[0] = start
    dist = ((pts - pts[start]) ** 2).sum(-1)
    for i in range(1, count):
        nxt = torch.argmax(dist)
        chosen[i] = nxt
        dist = torch.minimum(dist, ((pts - pts[nxt]) ** 2).sum(-1))
    return chosen


def build_graph(
    vertices: torch.Tensor, num_nodes: int, *, vertex_neighbours: int = 4, node_neighbours: int = 8
) -> DeformationGraph:
    """A deformation graph of ``num_nodes`` farthest-point nodes on ``vertices (V, 3)``.

    Each vertex is blended from its ``vertex_neighbours`` nearest nodes (Sumner et al. use 4); each
    node is linked to its ``node_neighbours`` nearest nodes (made symmetric).
    """
    check_shape(check_tensor(vertices, "vertices"), "vertices", [None, 3])
    n_verts = vertices.shape[0]
    num_nodes = min(int(num_nodes), n_verts)
    if num_nodes < 2:
        raise ShapeError(f"an embedded deformation needs at least 2 nodes, got {num_nodes} (V={n_verts}).")
    v = vertices.detach()
    node_vertex = farthest_point_sampling(v, num_nodes)
    nodes = v[node_vertex]
    kv = min(vertex_neighbours, num_nodes - 1)
    dist, idx = knn(v, nodes, kv + 1)
    d_max = dist[:, -1:].clamp_min(torch.finfo(v.dtype).eps)
    w = (1.0 - dist[:, :-1] / d_max).clamp_min(0.0) ** 2
    # a vertex equidistant from all its k+1 nodes would get zero weights: fall back to uniform
    w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))
    w = w / w.sum(1, keepdim=True)
    kn = min(node_neighbours, num_nodes - 1)
    _, nidx = knn(nodes, nodes, kn + 1)
    src = torch.arange(num_nodes, device=v.device).repeat_interleave(kn)
    dst = nidx[:, 1:].reshape(-1)  # drop self (the nearest)
    pairs = torch.cat([torch.stack([src, dst], 1), torch.stack([dst, src], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    edges = torch.unique(pairs, dim=0)
    return DeformationGraph(nodes=nodes, node_vertex=node_vertex, vertex_nodes=idx[:, :-1],
                            vertex_weights=w, edges=edges)


def deform(graph: DeformationGraph, points: torch.Tensor, affine: torch.Tensor,
           translation: torch.Tensor) -> torch.Tensor:
    """Move ``points (V, 3)`` (the vertices the graph was built on) by the node maps.

    ``affine (G, 3, 3)`` holds ``D_j = A_j - I``; ``translation (G, 3)`` holds ``t_j``.
    """
    g = graph.nodes[graph.vertex_nodes]  # (V, k, 3)
    a = affine[graph.vertex_nodes]  # (V, k, 3, 3)
    t = translation[graph.vertex_nodes]
    local = points[:, None, :] - g
    moved = points[:, None, :] + (a @ local[..., None])[..., 0] + t
    return (graph.vertex_weights[..., None] * moved).sum(1)


def rigidity_energy(affine: torch.Tensor) -> torch.Tensor:
    """Sumner et al.'s ``Rot``: how far each ``A_j = I + D_j`` is from a rotation, summed over nodes.

    Per node: the squared dot products of its columns pairwise plus ``(|c_i|^2 - 1)^2``.
    """
    a = affine + torch.eye(3, dtype=affine.dtype, device=affine.device)
    gram = a.transpose(-1, -2) @ a  # (G, 3, 3): column dot products
    off = gram[:, 0, 1] ** 2 + gram[:, 0, 2] ** 2 + gram[:, 1, 2] ** 2
    diag = ((torch.diagonal(gram, dim1=-2, dim2=-1) - 1.0) ** 2).sum(-1)
    return (off + diag).sum()


def smoothness_energy(graph: DeformationGraph, affine: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Sumner et al.'s ``Reg``: ``sum_(j,k) |A_j (g_k - g_j) + g_j + t_j - (g_k + t_k)|^2`` over the edges.

    With ``A = I + D`` the residual is ``D_j (g_k - g_j) + t_j - t_k`` (mm).
    """
    j, k = graph.edges[:, 0], graph.edges[:, 1]
    d = graph.nodes[k] - graph.nodes[j]
    r = (affine[j] @ d[..., None])[..., 0] + translation[j] - translation[k]
    return (r * r).sum()
