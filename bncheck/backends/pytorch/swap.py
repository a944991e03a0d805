"""Replace only the normalization inside a layer, keeping whatever else its class does.

A plain ``BatchNorm2d`` is replaced whole. A subclass such as timm's ``BatchNormAct2d`` normalizes
and then applies its own ``drop`` and ``act`` children; replacing the whole module would silently
drop them and change the network. For such a class the layer's own ``forward`` is traced with
torch.fx, its one normalization call is replaced by the new module, and every op before and after it
stays as the class wrote it.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import fx, nn

from bncheck.core.network.naming import unique_name
from bncheck.errors import BncheckError

# The calls through which a normalization layer's forward normalizes its input.
_NORM_CALLS = {F.batch_norm, torch.batch_norm, F.instance_norm, torch.instance_norm}
# Tensors the normalization call read; unused once it is gone, and they would otherwise make the
# wrapper look like a normalization layer itself.
_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def adds_behaviour(module: nn.Module) -> bool:
    """True when ``module``'s class does more in ``forward`` than torch's own norm layers do."""
    if not list(module.children()):
        # Without children a subclass can only normalize (FrozenBatchNorm2d and kin).
        return False
    forward = type(module).forward
    return not getattr(forward, "__module__", "").startswith("torch.nn.modules")


class Replacements:
    """Puts new normalizations into a model and sums up, per class, what was kept around them."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.kept: Counter[str] = Counter()

    def replace(self, name: str, norm: nn.Module) -> None:
        """Put ``norm`` in place of the normalization of layer ``name`` (in place)."""
        layer = self.model.get_submodule(name)
        if not adds_behaviour(layer):
            self.model.set_submodule(name, norm)
            return
        self.model.set_submodule(name, _wrap(name, layer, norm))
        children = ", ".join(n for n, _ in layer.named_children())
        self.kept[f"{type(layer).__name__} (its {children} kept)"] += 1

    def notes(self) -> list[str]:
        """One sentence per layer class whose own behaviour was kept."""
        return [f"{n} {what}: only the normalization was replaced" for what, n in self.kept.items()]


def _no_check(_input: torch.Tensor) -> None:
    """Stands in for ``_check_input_dim`` while tracing (the rank is already fixed)."""


def _wrap(name: str, layer: nn.Module, norm: nn.Module) -> fx.GraphModule:
    # torch's own BN forward checks the input rank with a Python ``if`` that fx cannot trace;
    # a subclass calling ``super().forward`` reaches it. The check is moot here: the model ran.
    own_check = "_check_input_dim" in vars(layer)
    if hasattr(layer, "_check_input_dim"):
        object.__setattr__(layer, "_check_input_dim", _no_check)  # an instance override
    try:
        gm = fx.symbolic_trace(layer.eval())
    except Exception as e:  # tracing a user's forward fails in many ways (control flow, asserts)
        raise BncheckError(
            f"layer {name} ({type(layer).__name__}) overrides forward in a way bncheck cannot trace "
            f"({type(e).__name__}), so its normalization cannot be replaced without losing what "
            "the class adds; rewrite it by hand or use --mode fold"
        ) from e
    finally:
        if not own_check and "_check_input_dim" in vars(layer):
            del layer._check_input_dim
    calls = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in _NORM_CALLS]
    if len(calls) != 1:
        raise BncheckError(
            f"layer {name} ({type(layer).__name__}): its forward makes {len(calls)} normalization "
            "calls, not one, so bncheck cannot tell which to replace"
        )
    call = calls[0]
    slot = unique_name("norm", lambda n: hasattr(gm, n))
    gm.add_submodule(slot, norm)
    x = call.args[0] if call.args else call.kwargs["input"]
    with gm.graph.inserting_before(call):
        new = gm.graph.call_module(slot, (x,))
    call.replace_all_uses_with(new)
    gm.graph.erase_node(call)
    gm.graph.eliminate_dead_code()
    used = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    for attr in _NORM_TENSORS:
        if attr not in used and hasattr(gm, attr):
            delattr(gm, attr)
    gm.recompile()
    return gm
