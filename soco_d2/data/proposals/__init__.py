"""Offline selective-search proposals: search, SoCo's filter, the memory-mapped cache and its
conversions. Knows images and boxes, nothing of models."""
from .cache import ProposalCache, key_stem, merge_caches, write_cache
from .filters import FilterConfig, filter_boxes
from .formats import (
    convert_proposals,
    export_detectron2_proposals,
    export_official_json,
    import_official_json,
)
from .images import BadImageError, load_image
from .runner import SearchConfig, merge_runs, run_selective_search
from .search import DEFAULT_MAX_SIZE, DEFAULT_MODE, MODES, propose_image, search_boxes

__all__ = [
    "ProposalCache",
    "write_cache",
    "merge_caches",
    "key_stem",
    "FilterConfig",
    "filter_boxes",
    "convert_proposals",
    "import_official_json",
    "export_official_json",
    "export_detectron2_proposals",
    "BadImageError",
    "load_image",
    "SearchConfig",
    "run_selective_search",
    "merge_runs",
    "propose_image",
    "search_boxes",
    "MODES",
    "DEFAULT_MODE",
    "DEFAULT_MAX_SIZE",
]
