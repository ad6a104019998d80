"""Adaptive top-K soft targets for the language model: a Python port of the LM's `topk_soft`
designer (plugins/lm), the paper's learned soft targets (kind lm.soft_targets/v1).

A small causal transformer φ reads the learner's detached features and the candidates' input
embeddings and, at each position, scores the K candidates (r = softmax of the scores) and gates
how far the target moves off the true token: q = (1−α)·onehot(true) + α·r, α = α_max·sigmoid(·).
The score and gate layers start at zero, so r starts uniform and α = α_max·sigmoid(gate_init).
Parameter names match the Rust designer's, so φ can be copied between the two. Config:

    [designer]
    plugin = "python"
    name = "python"
    [designer.config]
    module = "examples/python/topk_soft.py"
    class = "TopKSoft"
    produces = "lm.soft_targets/v1"
    args = { layers = 6, width = 256, heads = 4, alpha_max = 0.5, gate_init = -1.0 }
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """A pre-norm causal transformer block with explicit matmul + softmax attention (the meta
    step's double backward must run through it)."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, w = x.shape
        hd = w // self.heads
        qkv = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B,H,T,hd)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        y = scores.masked_fill(future, float("-inf")).softmax(-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, w))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TopKSoft(nn.Module):
    inputs = ["features", "cand_ids", "cand_logprobs", "cand_embeddings", "loss_mask"]

    def __init__(self, context, layers=6, width=256, heads=4, alpha_max=0.5, gate_init=0.0,
                 dtype="float32"):
        super().__init__()
        d, k = int(context["d_model"]), int(context["k"])
        if width % heads:
            raise ValueError(f"heads must divide width {width}, got {heads}")
        if not 0.0 <= alpha_max <= 1.0:
            raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max}")
        self.k, self.width, self.alpha_max = k, width, alpha_max
        std, out_std, in_std = 0.02, 0.02 / math.sqrt(2.0 * max(layers, 1)), 1.0 / math.sqrt(d)
        self.in_proj = nn.Linear(d, width)
        self.tok_proj = nn.Linear(d, width, bias=False)
        self.stat_proj = nn.Linear(3, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.score = nn.Linear(width, width, bias=False)
        self.emb_key = nn.Linear(d, width, bias=False)
        self.slot = nn.Parameter(torch.randn(k, width) * std)
        self.cand = nn.Linear(2, width, bias=False)
        self.gate = nn.Linear(width, 1)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif name.endswith(("proj.weight", "fc2.weight")) and name.startswith("blocks"):
                nn.init.normal_(p, std=out_std)
            elif name in ("in_proj.weight", "tok_proj.weight", "emb_key.weight"):
                nn.init.normal_(p, std=in_std)
            elif p.dim() == 2 and name != "slot":
                nn.init.normal_(p, std=std)
        nn.init.zeros_(self.score.weight)  # r starts uniform over the K
        nn.init.zeros_(self.gate.weight)  # α starts at α_max·sigmoid(gate_init)
        nn.init.constant_(self.gate.bias, gate_init)
        self.to({"float32": torch.float32, "float64": torch.float64}[dtype])

    def forward(self, inputs):
        dtype = self.slot.dtype
        f = inputs["features"].to(dtype)  # (B,T,d)
        lp = inputs["cand_logprobs"].to(dtype)  # (B,T,K)
        emb = inputs["cand_embeddings"].to(dtype)  # (B,T,K,d)
        lp_true = lp[..., :1]
        stats = torch.cat([lp_true, lp[..., 1:].amax(-1, keepdim=True),
                           lp.logsumexp(-1, keepdim=True)], -1)  # (B,T,3)
        x = self.in_proj(f) + self.tok_proj(emb[:, :, 0]) + self.stat_proj(stats)
        for block in self.blocks:
            x = block(x)
        h = self.ln_f(x)
        u = self.score(h)  # (B,T,w)
        # u·W_e e_k = (u W_e)·e_k: project the query to d once instead of the B·T·K keys to w
        emb_scores = (emb @ (u @ self.emb_key.weight).unsqueeze(-1)).squeeze(-1)  # (B,T,K)
        slot_scores = u @ self.slot.t()  # (B,T,K)
        cf = torch.stack([lp, lp - lp_true], -1)  # (B,T,K,2)
        cand_scores = (cf @ (u @ self.cand.weight).unsqueeze(-1)).squeeze(-1)  # (B,T,K)
        r = ((emb_scores + slot_scores + cand_scores) / math.sqrt(self.width)).softmax(-1)
        alpha = torch.sigmoid(self.gate(h).squeeze(-1)) * self.alpha_max  # (B,T)
        onehot = torch.zeros(self.k, dtype=dtype, device=r.device)
        onehot[0] = 1.0
        a = alpha.unsqueeze(-1)
        out = {"cand_ids": inputs["cand_ids"], "probs": (1 - a) * onehot + a * r, "alpha": alpha}
        if "loss_mask" in inputs:
            out["loss_mask"] = inputs["loss_mask"]
        return out

    def regularizer(self, construction):
        """The mass moved off the true token, averaged over the loss-bearing positions."""
        off = 1 - construction["probs"][..., 0]
        mask = construction.get("loss_mask")
        if mask is None:
            return off.mean()
        mask = mask.to(off.dtype)
        return (off * mask).sum() / mask.sum().clamp_min(1.0)

    def metrics(self, construction):
        """`alpha_mean`: the mean gate over the loss-bearing positions."""
        alpha, mask = construction["alpha"].double(), construction.get("loss_mask")
        if mask is None:
            return {"alpha_mean": alpha.mean()}
        mask = mask.double()
        return {"alpha_mean": (alpha * mask).sum() / mask.sum().clamp_min(1.0)}
