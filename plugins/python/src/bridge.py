"""The Python side of vpt's `python` designer plugin: loads a designer class from a file, checks
what it returns, and turns exceptions into one line. The plugin compiles this file into its
embedded interpreter; users never import it.

A designer is a `torch.nn.Module` built as `cls(context, **args)` (`context`: the task's designer
context as a dict); `forward(inputs: dict[str, Tensor]) -> dict[str, Tensor]` returns the
construction and its `parameters()` are φ. Optional: `inputs` (a list of the design inputs
forward reads), `regularizer(construction) -> Tensor | None`, `metrics(construction) ->
dict[str, float]`, `state() -> dict` and `load_state(dict)`.
"""

import importlib.util
import json
import math
import os
import sys
import traceback

import torch

# The differentiable tensor of each SDK kind: it must be attached to φ's graph when grad is on.
_DIFFERENTIABLE = {
    "lm.soft_targets/v1": "probs",
    "vision.view_mask/v1": "mask",
    "any.example_weights/v1": "weights",
}

_FRAMES = 3  # traceback frames kept in an error line
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


class ContractError(Exception):
    """A designer broke the plugin's contract: the message says how, without a traceback."""


def _one_line(text):
    return " ".join(str(text).split())


def describe(exc, tb=None):
    """One line for an exception: its type and message and where it was raised (the innermost
    frames of traceback `tb` (default: the exception's own) outside this file, as file:line in
    function)."""
    if isinstance(exc, ContractError):
        return _one_line(exc)
    tb = tb if tb is not None else exc.__traceback__
    frames = [f for f in traceback.extract_tb(tb) if f.filename != __file__]
    # the designer's own frames, without torch's module-call plumbing between them
    own = [f for f in frames if not f.filename.startswith(_TORCH_DIR)]
    frames = own or frames
    where = " <- ".join(
        f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(frames[-_FRAMES:])
    )
    message = _one_line(exc)
    line = type(exc).__name__ + (f": {message}" if message else "")
    return f"{line} (at {where})" if where else line


def _module_name(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    ident = "".join(c if c.isalnum() else "_" for c in stem)
    return f"vpt_designer_{ident}_{abs(hash(os.path.abspath(path))) % 10**8}"


def load(path, class_name, context, args, seed, device, kind):
    """Imports `path`, builds `class_name(context, **args)` on `device` (torch seeded with
    `seed`), and returns the hosted designer."""
    if not os.path.isfile(path):
        raise ContractError(f"designer.config.module: no such file: {path}")
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if cls is None:
        classes = sorted(
            n for n, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ == name
        )
        raise ContractError(
            f"designer.config.class: {path} defines no `{class_name}` "
            f"(its torch.nn.Module classes: {', '.join(classes) or 'none'})"
        )
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ContractError(
            f"designer.config.class: `{class_name}` in {path} is not a torch.nn.Module subclass"
        )
    torch.manual_seed(seed)
    designer = cls(context, **args)
    designer.to(device)
    return Hosted(designer, kind)


class Hosted:
    """A designer module as the plugin drives it."""

    def __init__(self, module, kind):
        self.module = module
        self.kind = kind
        inputs = getattr(module, "inputs", None)
        if inputs is not None and not (
            isinstance(inputs, (list, tuple)) and all(isinstance(n, str) for n in inputs)
        ):
            raise ContractError("`inputs` must be a list of design-input names")
        self.inputs = list(inputs) if inputs is not None else None
        for name, p in module.named_parameters():
            if not p.is_floating_point():
                raise ContractError(f"parameter `{name}` is {p.dtype}, not floating")

    def parameters(self):
        """φ: the parameters that require grad, by name."""
        return [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]

    def construct(self, inputs):
        if self.inputs is not None:
            missing = [n for n in self.inputs if n not in inputs]
            if missing:
                raise ContractError(
                    f"`inputs` names `{missing[0]}`, which the task does not provide "
                    f"(its design inputs: {', '.join(sorted(inputs))})"
                )
            inputs = {n: inputs[n] for n in self.inputs}
        out = self.module(inputs)
        tensors = self._tensor_dict(out)
        if torch.is_grad_enabled() and any(True for _ in self.parameters()):
            self._check_attached(tensors)
        return list(tensors.items())

    def _tensor_dict(self, out):
        if not isinstance(out, dict):
            raise ContractError(
                f"must return a dict[str, Tensor], got {type(out).__name__}"
            )
        for key, value in out.items():
            if not isinstance(key, str):
                raise ContractError(f"returned a non-string key {key!r}")
            if not isinstance(value, torch.Tensor):
                raise ContractError(
                    f"returned `{key}` as {type(value).__name__}, "
                    "expected a torch.Tensor"
                )
        return out

    def _check_attached(self, tensors):
        key = _DIFFERENTIABLE.get(self.kind)
        if key is not None and key in tensors:
            cut = [] if tensors[key].requires_grad else [key]
        else:
            floats = [k for k, t in tensors.items() if t.is_floating_point()]
            cut = floats if floats and not any(tensors[k].requires_grad for k in floats) else []
        if cut:
            raise ContractError(
                f"returned `{cut[0]}` cut off φ's graph (it does not "
                "require grad): the meta step differentiates V through it; do not detach it, "
                "go through .item()/numpy, or compute it under torch.no_grad()"
            )

    def regularizer(self, construction):
        fn = getattr(self.module, "regularizer", None)
        if fn is None:
            return None
        r = fn(construction)
        if r is None:
            return None
        if not isinstance(r, torch.Tensor) or r.numel() != 1:
            raise ContractError(
                f"must return a scalar Tensor or None, got "
                f"{type(r).__name__}{tuple(r.shape) if isinstance(r, torch.Tensor) else ''}"
            )
        return r.reshape(())

    def metrics(self, construction):
        fn = getattr(self.module, "metrics", None)
        if fn is None:
            return "{}"
        with torch.no_grad():
            out = fn(construction)
        if not isinstance(out, dict):
            raise ContractError(
                f"must return a dict[str, float], got {type(out).__name__}"
            )
        values = {}
        for k, v in out.items():
            v = v.item() if isinstance(v, torch.Tensor) else v
            if not isinstance(k, str) or not isinstance(v, (int, float)):
                raise ContractError(
                    f"must return a dict[str, float]; `{k}` is "
                    f"{type(v).__name__}"
                )
            if math.isfinite(v):
                values[k] = float(v)
        return json.dumps(values)

    def state(self):
        """(JSON text of the non-tensor entries, [(name, tensor)]) of the optional `state()`."""
        fn = getattr(self.module, "state", None)
        if fn is None:
            return "null", []
        out = fn()
        if not isinstance(out, dict):
            raise ContractError(f"must return a dict, got {type(out).__name__}")
        tensors = [(k, v.detach()) for k, v in out.items() if isinstance(v, torch.Tensor)]
        rest = {k: v for k, v in out.items() if not isinstance(v, torch.Tensor)}
        try:
            text = json.dumps(rest)
        except TypeError as e:
            raise ContractError(f"its non-tensor entries must be JSON: {e}")
        return text, tensors

    def load_state(self, text, tensors):
        fn = getattr(self.module, "load_state", None)
        values = json.loads(text)
        if fn is None:
            return
        state = dict(values) if isinstance(values, dict) else {}
        state.update(tensors)
        fn(state)


def probe():
    """A tensor whose data pointer and size the plugin compares with its own view of it."""
    t = torch.arange(7, dtype=torch.float32)
    return t, t.data_ptr(), t.numel()
