"""Dataset mappers of the pretraining methods, chosen by ``cfg.INPUT.DATASET_MAPPER_NAME``.

One mapper per file, registered in :data:`DATASET_MAPPER_REGISTRY` (the way Mask2Former picks
its mapper). A mapper class is built with ``cls(cfg, is_train)`` (detectron2's
``@configurable``) and declares ``uses_proposals``: the pretraining loader attaches proposal
caches to the dataset dicts only for mappers that read them.
"""
from detectron2.utils.registry import Registry

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Registry of pretraining dataset mappers, by short name (``register_mapper("multi_view")``). A
registered class is called as ``cls(cfg, is_train)`` and maps one dataset dict to one model
input (or None to skip an unreadable image).
"""


def register_mapper(name: str):
    """Class decorator: register a mapper under ``name`` (the value of
    ``INPUT.DATASET_MAPPER_NAME`` that selects it)."""

    def deco(cls):
        DATASET_MAPPER_REGISTRY._do_register(name, cls)  # fvcore's registry names by __name__
        return cls

    return deco


from .multi_view import MultiViewDatasetMapper  # noqa: E402  (registers "multi_view")
from .soco import SoCoDatasetMapper, lookup_proposals  # noqa: E402  (registers "soco")
from .detco import DetCoDatasetMapper  # noqa: E402  (registers "detco")
from .sim import SIMDatasetMapper  # noqa: E402  (registers "sim")

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "DetCoDatasetMapper",
    "MultiViewDatasetMapper",
    "SIMDatasetMapper",
    "SoCoDatasetMapper",
    "build_dataset_mapper",
    "get_dataset_mapper_class",
    "lookup_proposals",
    "register_mapper",
]


def get_dataset_mapper_class(cfg):
    """The mapper class named by ``cfg.INPUT.DATASET_MAPPER_NAME``, with a clear error."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    try:
        return DATASET_MAPPER_REGISTRY.get(name)
    except KeyError:
        known = sorted(k for k, _ in DATASET_MAPPER_REGISTRY)
        raise KeyError(
            f"INPUT.DATASET_MAPPER_NAME {name!r} is not a registered dataset mapper; known: {known}"
        ) from None


def build_dataset_mapper(cfg, is_train: bool = True, **kwargs):
    """Instantiate the mapper of ``cfg`` (extra keyword arguments go to its ``from_config``)."""
    return get_dataset_mapper_class(cfg)(cfg, is_train, **kwargs)
