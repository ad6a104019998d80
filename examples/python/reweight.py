"""Per-example loss weights from an MLP over the task's example features: a Python port of the
`reweight` designer (plugins/reweight), in the spirit of Learning to Reweight Examples.

φ scores each example, s = MLP(standardise(x)) (B,), and the scores become weights w ≥ 0 with
mean 1 (B·softmax(s/T), or a renormalised sigmoid). The host multiplies the task's per-example
pretraining losses by w (kind any.example_weights/v1). The scoring layer starts at zero, so the
designer starts as the baseline (w = 1). Config:

    [designer]
    plugin = "python"
    name = "python"
    [designer.config]
    module = "examples/python/reweight.py"
    class = "Reweight"
    produces = "any.example_weights/v1"
    args = { hidden = [32], dtype = "float64" }
"""

import torch
from torch import nn

LOG_FLOOR = 1e-30  # smallest weight fed to the logarithm of the regulariser
STD_EPS = 1e-5  # added to the per-batch variance when standardising


class Reweight(nn.Module):
    def __init__(self, context, hidden=(32,), activation="tanh", normalization="softmax",
                 temperature=1.0, standardize=True, input="example_features",
                 regularizer="kl", dtype="float32"):
        super().__init__()
        if "feature_dim" not in context:
            raise ValueError("the task's designer context has no `feature_dim`: reweight needs "
                             "a task whose design inputs include `example_features` (B, F)")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.features = int(context["feature_dim"])
        self.activation = {"tanh": torch.tanh, "relu": torch.relu}[activation]
        self.normalization = normalization
        self.temperature = float(temperature)
        self.standardize = standardize
        self.input = input
        self.regularizer_kind = regularizer
        self.inputs = [input]  # the design inputs forward reads
        width, layers = self.features, []
        for h in hidden:
            layers.append(nn.Linear(width, h))
            width = h
        self.layers = nn.ModuleList(layers)
        self.score = nn.Linear(width, 1)
        nn.init.zeros_(self.score.weight)  # every score 0: w = 1, exactly the baseline
        nn.init.zeros_(self.score.bias)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self.to(self.dtype)

    def forward(self, inputs):
        x = inputs[self.input].to(self.dtype)
        if x.dim() != 2 or x.shape[1] != self.features or x.shape[0] == 0:
            raise ValueError(f"{self.input}: expected shape (B, {self.features}) with B > 0, "
                             f"got {tuple(x.shape)}")
        h = x
        if self.standardize:
            centred = h - h.mean(0, keepdim=True)
            var = centred.square().mean(0, keepdim=True)
            h = centred / (var + STD_EPS).sqrt()
        for layer in self.layers:
            h = self.activation(layer(h))
        s = self.score(h).squeeze(1) / self.temperature  # (B,)
        if self.normalization == "softmax":
            w = torch.softmax(s, 0) * s.shape[0]
        else:
            g = torch.sigmoid(s)
            w = g / g.mean()
        return {"weights": w}

    def regularizer(self, construction):
        """KL(w/B ‖ uniform) = mean(w log w), or KL(uniform ‖ w/B) = −mean(log w)."""
        w = construction["weights"]
        log_w = w.clamp_min(LOG_FLOOR).log()
        if self.regularizer_kind == "kl":
            return (w * log_w).mean(dtype=torch.float64)
        return -log_w.mean(dtype=torch.float64)

    def metrics(self, construction):
        w = construction["weights"]
        return {"weight_max": w.max()}
