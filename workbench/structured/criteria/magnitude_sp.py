"""magnitude-sp: the L2 norm of the weights a structure couples (data-free).

The structured counterpart of magnitude pruning, a baseline in the experiments of FLAP (An et al., 2024) and
LLM-Pruner (Ma et al., 2023): a structure's score is the norm of every weight that leaves with it,

    head h:     S_h = sqrt( ||W_q[rows of h]||_F^2 + ||W_o[:, columns of h]||_F^2 )
    group g:    S_g = sqrt( sum_{h in g} (||W_q[rows of h]||^2 + ||W_o[:, cols of h]||^2)
                            + ||W_k[rows of g]||^2 + ||W_v[rows of g]||^2 )
    channel j:  S_j = sqrt( ||W_gate[j, :]||^2 + ||W_up[j, :]||^2 + ||W_down[:, j]||^2 )

(FLAP's released magnitude-sp uses the column norms of down_proj alone.) Biases are left out. Scores are
compared within a layer (uniform allocation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from workbench.structured.criteria import Criterion, NoParams, head_blocks_of_columns, head_blocks_of_rows, per_unit

if TYPE_CHECKING:
    import torch

    from workbench.structured.layout import MLP, Attention
    from workbench.structured.stats import LayerStatistics


def head_squared_norms(attention: Attention) -> tuple[torch.Tensor, torch.Tensor]:
    """(per query head: q rows + o columns, per kv head: k rows + v rows), squared Frobenius norms."""
    hd = attention.head_dim
    query = (head_blocks_of_rows(attention.q.weight.float(), hd).pow(2).sum((1, 2))
             + head_blocks_of_columns(attention.o.weight.float(), hd).pow(2).sum((0, 2)))
    kv = (head_blocks_of_rows(attention.k.weight.float(), hd).pow(2).sum((1, 2))
          + head_blocks_of_rows(attention.v.weight.float(), hd).pow(2).sum((1, 2)))
    return query, kv


def channel_squared_norms(mlp: MLP) -> torch.Tensor:
    rows = sum(linear.weight.float().pow(2).sum(1) for linear in mlp.inputs)
    return rows + mlp.output.weight.float().pow(2).sum(0)


class MagnitudeSP(Criterion):
    name = "magnitude-sp"
    version = "1"
    Params = NoParams
    structures = frozenset({"heads", "channels"})

    def head_scores(self, attention: Attention, stats: LayerStatistics | None, unit: str,
                    params: BaseModel) -> torch.Tensor:
        query, kv = head_squared_norms(attention)
        return per_unit(query, kv, attention.group_size, unit).sqrt()

    def channel_scores(self, mlp: MLP, stats: LayerStatistics | None, params: BaseModel) -> torch.Tensor:
        return channel_squared_norms(mlp).sqrt()


CRITERION = MagnitudeSP()
