"""wanda-sp: Wanda's weight-times-activation score summed over a structure.

Wanda (Sun et al., 2023, eq. 1) scores a weight by S_ij = |W_ij| * ||X_j||_2, ||X_j|| being the L2 norm over
calibration tokens of input feature j of its layer. The structured variant (the "Wanda-sp" baseline in the experiments of
FLAP, An et al., 2024) adds the scores of the weights a structure couples:

    head h:     S_h = sum_{r in rows of h} sum_k |W_q[r, k]| ||X^attn_k||  +  sum_i sum_{f in cols of h} |W_o[i, f]| ||X^o_f||
    group g:    S_g = sum_{h in g} S_h + (the same sum over the k and v rows of g)
    channel j:  S_j = sum_k (|W_gate[j, k]| + |W_up[j, k]|) ||X^mlp_k||  +  sum_i |W_down[i, j]| ||X^down_j||

(FLAP's released Wanda-sp scores only the output projection's columns, by their mean; the rows that leave
with the structure are counted here too.) Scores are compared within a layer (uniform allocation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from workbench.structured.criteria import Criterion, NoParams, per_unit

if TYPE_CHECKING:
    import torch

    from workbench.structured.layout import MLP, Attention
    from workbench.structured.stats import LayerStatistics


def wanda_rows(weight: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Per output row: sum_k |W[r, k]| * ||X_k||."""
    return (weight.float().abs() * norm.float().reshape(1, -1)).sum(1)


def wanda_columns(weight: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Per input column: sum_i |W[i, j]| * ||X_j||."""
    return weight.float().abs().sum(0) * norm.float()


class WandaSP(Criterion):
    name = "wanda-sp"
    version = "1"
    Params = NoParams
    structures = frozenset({"heads", "channels"})
    needs_inputs = True

    def head_scores(self, attention: Attention, stats: LayerStatistics | None, unit: str,
                    params: BaseModel) -> torch.Tensor:
        hd, norm = attention.head_dim, stats.attention_input.norm
        query = (wanda_rows(attention.q.weight, norm).reshape(-1, hd).sum(1)
                 + wanda_columns(attention.o.weight, stats.heads_output.norm).reshape(-1, hd).sum(1))
        kv = (wanda_rows(attention.k.weight, norm) + wanda_rows(attention.v.weight, norm)).reshape(-1, hd).sum(1)
        return per_unit(query, kv, attention.group_size, unit)

    def channel_scores(self, mlp: MLP, stats: LayerStatistics | None, params: BaseModel) -> torch.Tensor:
        rows = sum(wanda_rows(linear.weight, stats.mlp_input.norm) for linear in mlp.inputs)
        return rows + wanda_columns(mlp.output.weight, stats.channels.norm)


CRITERION = WandaSP()
