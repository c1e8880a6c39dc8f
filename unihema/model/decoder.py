"""Image decoder: DINO's deformable decoder with iterative box refinement.

Each layer runs self-attention among the queries (through the attention dispatcher, with
the denoising mask when DN queries are present), deformable cross-attention into the
encoder tokens around the query's current box, and a feed-forward. After every layer the
shared heads predict classes, a box delta on top of the incoming box (which becomes the
next layer's reference, detached) and six morphology logits, giving the auxiliary outputs.

Names follow DINO (``layers.{i}.cross_attn/norm1/self_attn/norm2/linear1/linear2/norm3``,
``norm``, ``ref_point_head``, ``bbox_embed``, ``class_embed``) for checkpoint interop.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from unihema.ops import MSDeformAttn, MultiheadAttention

from .layers import MLP, activation, bias_init_with_prob, inverse_sigmoid
from .position import sine_embed_boxes


class DeformableDecoderLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        n_levels: int,
        n_heads: int,
        n_points: int,
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.act = activation(act)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt,
        query_pos,
        reference_points,
        memory,
        memory_mask,
        spatial_shapes,
        level_start_index,
        self_attn_mask=None,
    ):
        # Order sa -> ca -> ffn (official decoder_module_seq).
        q = k = tgt + query_pos
        out = self.self_attn(q, k, tgt, attn_mask=self_attn_mask)[0]
        tgt = self.norm2(tgt + self.dropout2(out))
        out = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index, memory_mask)
        tgt = self.norm1(tgt + self.dropout1(out))
        out = self.linear2(self.dropout3(self.act(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(out))


class ImageDecoder(nn.Module):
    def __init__(
        self,
        d_model: int,
        nheads: int,
        num_layers: int,
        dim_feedforward: int,
        n_levels: int,
        n_points: int,
        num_classes: int,
        num_attributes: int,
        dropout: float = 0.0,
        look_forward_twice: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.look_forward_twice = look_forward_twice
        self.checkpointing = False
        self.layers = nn.ModuleList(
            DeformableDecoderLayer(d_model, dim_feedforward, dropout, n_levels, nheads, n_points)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        # Shared across layers (official dec_pred_{class,bbox}_embed_share=True).
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.class_embed = nn.Linear(d_model, num_classes)
        self.morph_embed = nn.Linear(d_model, num_attributes)
        nn.init.constant_(self.class_embed.bias, bias_init_with_prob(0.01))
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def forward(
        self,
        tgt,
        refpoints_unsigmoid,
        memory,
        memory_mask,
        spatial_shapes,
        level_start_index,
        valid_ratios,
        self_attn_mask=None,
    ):
        """Returns one dict per layer: hs (B, N, d), pred_logits, pred_boxes (sigmoid cxcywh), pred_morphology."""
        outputs = []
        ref = refpoints_unsigmoid.sigmoid()
        ratios = torch.cat([valid_ratios, valid_ratios], -1)[:, None]
        for layer in self.layers:
            ref_input = ref.detach()[:, :, None] * ratios
            query_pos = self.ref_point_head(sine_embed_boxes(ref_input[:, :, 0, :], self.d_model).to(tgt.dtype))
            args = (tgt, query_pos, ref_input, memory, memory_mask, spatial_shapes, level_start_index, self_attn_mask)
            if self.checkpointing and self.training and torch.is_grad_enabled():
                tgt = checkpoint(layer, *args, use_reentrant=False)
            else:
                tgt = layer(*args)
            hs = self.norm(tgt)
            # Box refinement in the weights' dtype (fp32 under the training recipe), not
            # autocast's bf16: a delta added in logit space and squashed by a sigmoid loses
            # most of its resolution in 8 mantissa bits, and the next layer samples there.
            with torch.autocast(hs.device.type, enabled=False):
                delta = self.bbox_embed(hs.to(self.bbox_embed.layers[0].weight.dtype)).float()
                # ``ref`` carries the previous layer's delta in its graph and nothing older.
                # Look forward twice (DINO): this layer's box sits on it, so its loss also
                # trains the previous layer's delta, exactly one layer back; without it the
                # box sits on a detached reference and trains only this layer's delta.
                base = ref if self.look_forward_twice else ref.detach()
                boxes = (delta + inverse_sigmoid(base.float())).sigmoid()
                # The next layer's reference: the same value, cut from every earlier layer.
                next_ref = (delta + inverse_sigmoid(ref.detach().float())).sigmoid()
            outputs.append(
                {
                    "hs": hs,
                    "pred_logits": self.class_embed(hs),
                    "pred_boxes": boxes,
                    "pred_morphology": self.morph_embed(hs),
                }
            )
            ref = next_ref
        return outputs
