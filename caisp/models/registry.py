"""Models by name, as in CompressAI's zoo / BasicSR's registries: params.yaml names a `type`."""
from __future__ import annotations

from typing import Callable

from torch import nn

from caisp import CaispError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable:
    """Class/function decorator: make a model constructible by `build(name, **kwargs)`."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def build(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise CaispError(f"unknown model type {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def names() -> list[str]:
    return sorted(_REGISTRY)
