"""torch.export programs: turn batch_norm graph nodes back into modules bncheck can switch."""

from __future__ import annotations

import torch
from torch import fx, nn

from bncheck.backends.pytorch.modules import ExportedBatchNorm
from bncheck.core.network.naming import unique_name
from bncheck.core.network.numerics import DEFAULT_EPS

_BN_OPS = {
    torch.ops.aten.batch_norm.default,
    torch.ops.aten._native_batch_norm_legit_no_training.default,
    torch.ops.aten._native_batch_norm_legit_functional.default,
    torch.ops.aten.cudnn_batch_norm.default,
}


def example_shapes(ep: torch.export.ExportedProgram) -> list[tuple[int, ...]]:
    """Per-sample input shapes the program was exported with."""
    args = ep.example_inputs[0] if ep.example_inputs else ()
    return [tuple(a.shape[1:]) for a in args if isinstance(a, torch.Tensor)]


def batch_limit(ep: torch.export.ExportedProgram) -> int | None:
    """The upper bound the program puts on its first input's batch dimension, if any."""
    names = set(ep.graph_signature.user_inputs)
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in names:
            continue
        val = node.meta.get("val")
        dim = val.shape[0] if isinstance(val, torch.Tensor) and val.dim() else None
        if not isinstance(dim, torch.SymInt):
            return None  # a static batch, or no tensor input: nothing to keep
        bounds = ep.range_constraints.get(dim.node.expr)
        upper = getattr(bounds, "upper", None)
        # Imported here, not at the top: sympy costs 0.3 s a process (several seconds where
        # its bytecode is not cached), and only .pt2 programs with a dynamic batch need it.
        import sympy

        # torch's int_oo claims is_finite; only a real sympy Integer is a bound.
        return int(upper) if isinstance(upper, sympy.Integer) else None
    return None


def module_from_exported(ep: torch.export.ExportedProgram) -> fx.GraphModule:
    """An eval-mode GraphModule whose normalization layers are real submodules named as in the
    source, so that hooks, train/eval switching and module swaps work as on eager models."""
    gm = ep.module()
    used: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _OTHER_NORMS:
            path, cls = _module_path(node, used)
            module, x = _OTHER_NORMS[node.target](gm, node)
            module.original = cls  # type: ignore[assignment]
            _swap(gm, node, path, module, x)
            continue
        if node.target not in _BN_OPS:
            continue
        path, cls = _module_path(node, used)
        x, w, b, rm, rv = node.args[:5]
        momentum, eps = _momentum_eps(node)
        weight, bias = _attr(gm, w), _attr(gm, b)
        mean, var = _attr(gm, rm), _attr(gm, rv)
        assert mean is not None and var is not None
        bn = ExportedBatchNorm(mean.numel(), eps, momentum, cls)
        _fill(bn, weight=weight, bias=bias, running_mean=mean, running_var=var)
        _swap(gm, node, path, bn, x)
    gm.graph.eliminate_dead_code()
    # ep.module() refuses train()/eval(); a plain GraphModule over the same graph allows them.
    plain = fx.GraphModule(gm, gm.graph)
    return plain.eval()


def _fill(module: nn.Module, **values: torch.Tensor | None) -> None:
    """Copy each given tensor into the module's tensor of that name, where both exist."""
    with torch.no_grad():
        for name, value in values.items():
            target = getattr(module, name, None)
            if isinstance(target, torch.Tensor) and value is not None:
                target.copy_(value)


def _num(arg: object) -> float:
    assert isinstance(arg, (int, float)), f"expected a number in the graph, got {arg!r}"
    return float(arg)


def _swap(gm: fx.GraphModule, node: fx.Node, path: str, module: nn.Module, x: object) -> None:
    assert isinstance(x, fx.Node)
    _set_module(gm, path, module)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(path, (x,))
    _replace_uses(node, new)
    gm.graph.erase_node(node)


def _group_norm(gm: fx.GraphModule, node: fx.Node) -> tuple[nn.Module, object]:
    x, groups, w, b, eps = node.args[:5]
    weight = _attr(gm, w)
    groups_n = int(_num(groups))
    channels = weight.numel() if weight is not None else groups_n
    m = nn.GroupNorm(groups_n, channels, _num(eps), affine=weight is not None)
    _fill(m, weight=weight, bias=_attr(gm, b))
    return m, x


def _layer_norm(gm: fx.GraphModule, node: fx.Node) -> tuple[nn.Module, object]:
    x, shape, w, b = node.args[:4]
    eps = _num(node.args[4]) if len(node.args) > 4 else DEFAULT_EPS
    assert isinstance(shape, (list, tuple))
    m = nn.LayerNorm([int(_num(d)) for d in shape], eps, elementwise_affine=w is not None)
    _fill(m, weight=_attr(gm, w), bias=_attr(gm, b))
    return m, x


def _instance_norm(gm: fx.GraphModule, node: fx.Node) -> tuple[nn.Module, object]:
    x, w, b, rm, rv, _use_input_stats, momentum, eps = node.args[:8]
    mean = _attr(gm, rm)
    weight = _attr(gm, w)
    c = mean.numel() if mean is not None else weight.numel() if weight is not None else 0
    m = _AnyInstanceNorm(c, _num(eps), _num(momentum), affine=weight is not None,
                         track_running_stats=mean is not None)
    _fill(m, weight=weight, bias=_attr(gm, b), running_mean=mean, running_var=_attr(gm, rv))
    return m, x


class _AnyInstanceNorm(nn.modules.instancenorm._InstanceNorm):
    """InstanceNorm rebuilt from an exported node; the rank was fixed at export."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Per-sample statistics unless eval mode with tracked running stats."""
        use_input_stats = self.training or not self.track_running_stats
        return nn.functional.instance_norm(input, self.running_mean, self.running_var, self.weight,
                                           self.bias, use_input_stats, self.momentum or 0.0, self.eps)


_OTHER_NORMS = {
    torch.ops.aten.group_norm.default: _group_norm,
    torch.ops.aten.layer_norm.default: _layer_norm,
    torch.ops.aten.instance_norm.default: _instance_norm,
}


def _module_path(node: fx.Node, used: set[str]) -> tuple[str, str]:
    stack = node.meta.get("nn_module_stack") or {}
    path, cls = (list(stack.values())[-1] if stack else (node.name, "BatchNorm"))
    path = path or node.name
    # Safe for getattr on the graph module; the last class name is what a user recognizes.
    name = unique_name(path.replace("L['self'].", ""), used.__contains__)
    used.add(name)
    return name, str(cls).rsplit(".", 1)[-1]


def _momentum_eps(node: fx.Node) -> tuple[float, float]:
    args = node.args
    if node.target is torch.ops.aten._native_batch_norm_legit_no_training.default:
        return _num(args[5]), _num(args[6])
    return _num(args[6]), _num(args[7])


def attr_tensor(gm: nn.Module, target: str) -> torch.Tensor:
    """The tensor a get_attr target such as ``layer1.0.weight`` names."""
    obj: object = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, torch.Tensor)
    return obj


def _attr(gm: fx.GraphModule, arg: object) -> torch.Tensor | None:
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return None
    return attr_tensor(gm, str(arg.target)).detach()


def _set_module(gm: fx.GraphModule, path: str, module: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent: nn.Module = gm.get_submodule(parent_path) if parent_path else gm
    existing = getattr(parent, leaf, None)
    if isinstance(existing, nn.Module) and not isinstance(existing, ExportedBatchNorm):
        # The unlifted program keeps tensors on placeholder submodules; anything the new module
        # does not hold itself stays attached for get_attr nodes that still read it.
        for n, p in list(existing.named_parameters(recurse=False)):
            if getattr(module, n, None) is None:
                module.register_parameter(n, p)
        for n, buf in list(existing.named_buffers(recurse=False)):
            if n == "num_batches_tracked":
                _fill(module, num_batches_tracked=buf)
            if getattr(module, n, None) is None:
                module.register_buffer(n, buf)
        for n, child in existing.named_children():
            module.add_module(n, child)
    setattr(parent, leaf, module)


def _replace_uses(node: fx.Node, new: fx.Node) -> None:
    # The native variants return (out, mean, rstd); only element 0 is ever consumed downstream.
    for user in list(node.users):
        if user.op == "call_function" and user.target.__name__ == "getitem":  # type: ignore[union-attr]
            user.replace_all_uses_with(new)
    node.replace_all_uses_with(new)
