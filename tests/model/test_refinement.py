"""Text-guided visual refinement: the official sigmoid-gated mix over every query, and the gated residual."""

from __future__ import annotations

import pytest
import torch

from unihema.model import build_model
from unihema.model.hemaformer import OfficialTextRefinement, TextGuidedRefinement, build_text_refinement

from .conftest import make_batch, tiny_config


def test_official_refinement_mixes_query_and_attention_by_the_gate():
    """(1 - a) * q + a * attn: a closed gate gives the query, an open one the prompt's attention."""
    torch.manual_seed(0)
    refine = OfficialTextRefinement(32, 48, 4)
    q, text = torch.randn(2, 7, 32), torch.randn(2, 5, 48)
    txt = refine.text_proj(text)
    attended = refine.cross_attn(q, txt, txt)[0]
    with torch.no_grad():
        refine.gate_mlp[2].weight.zero_()
        refine.gate_mlp[2].bias.fill_(-50.0)
        assert torch.allclose(refine(q, text), q, atol=1e-6)
        refine.gate_mlp[2].bias.fill_(50.0)
        assert torch.allclose(refine(q, text), attended, atol=1e-6)
        refine.gate_mlp[2].bias.zero_()
        assert torch.allclose(refine(q, text), 0.5 * (q + attended), atol=1e-6)


def test_variants_by_name_and_their_query_sets(tokenizer):
    """hema.refinement picks the module; the official one reads every query, the residual only the top K."""
    assert isinstance(build_text_refinement("official", 32, 48, 4), OfficialTextRefinement)
    assert isinstance(build_text_refinement("gated_residual", 32, 48, 4), TextGuidedRefinement)
    with pytest.raises(ValueError, match="hema.refinement"):
        build_text_refinement("top_k", 32, 48, 4)
    for kind, touched in (("official", 16), ("gated_residual", 8)):
        torch.manual_seed(0)
        model = build_model(tiny_config(f"model.hema.refinement={kind}")).eval()
        if kind == "gated_residual":
            with torch.no_grad():
                model.hema.refine.gate_mlp[2].bias.fill_(1.0)  # open the gate that starts closed
        seen = []
        handle = model.hema.refine.register_forward_hook(lambda m, i, out, seen=seen: seen.append((i[0], out)))
        with torch.no_grad():
            model(make_batch(tokenizer, ["detection"]))
        handle.remove()
        queries, refined = seen[0]
        assert queries.shape[1] == touched and not torch.allclose(queries, refined)
    assert not hasattr(build_text_refinement("official", 32, 48, 4), "combined_proj")
