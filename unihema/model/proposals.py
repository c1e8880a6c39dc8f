"""Two-stage query selection (DINO "standard"): encoder tokens propose boxes, the best K seed the decoder.

Every encoder token gets an anchor box (its cell, 0.05 * 2^level wide), a class score and
a box delta; the top ``num_queries`` tokens by score give the decoder's initial reference
boxes (detached), while the content queries stay learned (``tgt_embed``, DINO's
``embed_init_tgt``). The selected proposals are returned as ``interm_outputs`` so the
losses can supervise the encoder directly.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import MLP, bias_init_with_prob


def encoder_output_proposals(memory, padding_mask, spatial_shapes):
    """Anchors per token -> (memory with invalid tokens zeroed, anchors in logit space, valid (B, S)).

    Invalid tokens (padding, or anchors touching the border) get anchor logits 0 and are
    excluded from selection by the caller; DINO fills them with +inf, which we avoid so no
    inf can reach a gradient.
    """
    b = memory.shape[0]
    proposals = []
    start = 0
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        mask = padding_mask[:, start : start + h * w].view(b, h, w)
        valid_h = (~mask[:, :, 0]).sum(1)
        valid_w = (~mask[:, 0, :]).sum(1)
        gy, gx = torch.meshgrid(
            torch.linspace(0, h - 1, h, dtype=torch.float32, device=memory.device),
            torch.linspace(0, w - 1, w, dtype=torch.float32, device=memory.device),
            indexing="ij",
        )
        grid = torch.stack([gx, gy], -1)
        scale = torch.stack([valid_w, valid_h], -1).view(b, 1, 1, 2).to(torch.float32).clamp(min=1)
        grid = (grid.unsqueeze(0).expand(b, -1, -1, -1) + 0.5) / scale
        wh = torch.ones_like(grid) * 0.05 * (2.0**lvl)
        proposals.append(torch.cat((grid, wh), -1).view(b, -1, 4))
        start += h * w
    proposals = torch.cat(proposals, 1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1) & ~padding_mask
    logits = torch.log(proposals / (1 - proposals)).masked_fill(~valid[..., None], 0.0)
    memory = memory.masked_fill(~valid[..., None], 0.0)
    return memory, logits.to(memory.dtype), valid


class TwoStageProposals(nn.Module):
    def __init__(self, d_model: int, num_classes: int, num_queries: int) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.class_embed = nn.Linear(d_model, num_classes)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.tgt_embed = nn.Embedding(num_queries, d_model)
        nn.init.constant_(self.class_embed.bias, bias_init_with_prob(0.01))
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def forward(self, memory, padding_mask, spatial_shapes):
        """Returns (tgt (B, Q, d), reference boxes in logit space (B, Q, 4), detached, interm outputs)."""
        b, s, _ = memory.shape
        if s < self.num_queries:
            raise ValueError(
                f"two-stage selection needs at least num_queries={self.num_queries} image tokens, got {s}; "
                "use larger images or fewer queries"
            )
        out_memory, anchors, valid = encoder_output_proposals(memory, padding_mask, spatial_shapes)
        out_memory = self.enc_output_norm(self.enc_output(out_memory))
        logits = self.class_embed(out_memory)
        # The proposal box (the decoder's first reference) in the weights' dtype, not
        # autocast's bf16: see the box refinement in decoder.py.
        with torch.autocast(out_memory.device.type, enabled=False):
            coords = self.bbox_embed(out_memory.to(self.bbox_embed.layers[0].weight.dtype)).float() + anchors.float()
        score = logits.max(-1).values.masked_fill(~valid, torch.finfo(logits.dtype).min)
        topk = torch.topk(score, self.num_queries, dim=1).indices
        ref_undetached = torch.gather(coords, 1, topk[..., None].expand(-1, -1, 4))
        interm = {
            "pred_logits": torch.gather(logits, 1, topk[..., None].expand(-1, -1, logits.shape[-1])),
            "pred_boxes": ref_undetached.sigmoid(),
        }
        # Called as a module (not .weight) so ZeRO-3's hooks gather the table before use.
        index = torch.arange(self.num_queries, device=memory.device)
        tgt = self.tgt_embed(index).unsqueeze(0).expand(b, -1, -1)
        return tgt, ref_undetached.detach(), interm
