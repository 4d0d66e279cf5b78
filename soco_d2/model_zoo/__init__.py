"""The shipped configs, found the same way from a checkout and from an installed wheel.

``get_config_file("pretrain/soco_R50_FPN_100ep.yaml")`` looks in the repository's ``configs/``
first (a checkout or an editable install: edits there take effect at once), then in the copy
that ``setup.py`` puts into the package as ``soco_d2/model_zoo/configs/`` when it builds a
wheel. ``_BASE_`` paths inside the configs are relative, so both copies resolve them alike.
"""
import os
from typing import List, Optional

__all__ = ["config_dirs", "get_config_file", "shipped_config_name", "resolve_config"]

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../soco_d2
_REPO_ROOT = os.path.dirname(_PACKAGE_ROOT)


def config_dirs() -> List[str]:
    """Folders searched for configs, in order (only those that exist).

    Returns:
        the repository's ``configs/`` (when ``soco_d2`` runs from a checkout, recognised by
        its ``setup.py``) and the installed ``soco_d2/model_zoo/configs/``.
    """
    dirs = []
    repo_configs = os.path.join(_REPO_ROOT, "configs")
    if os.path.isfile(os.path.join(_REPO_ROOT, "setup.py")) and os.path.isdir(repo_configs):
        dirs.append(repo_configs)
    installed = os.path.join(_PACKAGE_ROOT, "model_zoo", "configs")
    if os.path.isdir(installed):
        dirs.append(installed)
    return dirs


def get_config_file(relative_path: str) -> str:
    """Absolute path of a shipped config.

    Args:
        relative_path: path under ``configs/``, e.g. ``"pretrain/soco_R50_FPN_100ep.yaml"``.

    Returns:
        the path of an existing file (pass it to ``cfg.merge_from_file``).

    Raises:
        FileNotFoundError: if no config folder has it; the message lists the folders searched.
    """
    dirs = config_dirs()
    for d in dirs:
        path = os.path.join(d, relative_path)
        if os.path.isfile(path):
            return path
    searched = ", ".join(dirs) if dirs else "none found (the installed package has no configs)"
    raise FileNotFoundError(
        f"Config {relative_path!r} is not shipped with soco_d2; searched: {searched}. "
        "Give a path relative to configs/, e.g. 'pretrain/soco_R50_FPN_100ep.yaml'."
    )


def shipped_config_name(path: str) -> Optional[str]:
    """``"configs/<relative path>"`` when ``path`` is one of the shipped configs (in the checkout
    or the installed copy), else None: how results and done-markers name a config, the same
    from a checkout and from an installed wheel."""
    full = os.path.abspath(path)
    for d in config_dirs():
        if full.startswith(d + os.sep):
            return "configs/" + os.path.relpath(full, d).replace(os.sep, "/")
    return None


def resolve_config(path: str) -> str:
    """A config path as a user or a preset gives it: an existing file as is; otherwise
    ``configs/<relative path>`` (or just ``<relative path>``) is looked up among the shipped
    configs. Returns ``path`` unchanged when neither exists (the caller reports it)."""
    if os.path.isfile(path):
        return os.path.abspath(path)
    relative = path[len("configs/"):] if path.startswith("configs/") else path
    for d in config_dirs():
        candidate = os.path.join(d, relative)
        if os.path.isfile(candidate):
            return candidate
    return path
