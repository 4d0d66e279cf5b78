"""Print the environment soco_d2 runs in, and what detectron2's compiled ops being absent disables.

Usage: ``python -m soco_d2.collect_env [--short]``
"""
import argparse
import importlib
import sys

# Features of detectron2 that need its compiled `_C` extension, and what soco_d2 uses instead.
_C_FEATURES = {
    "deformable convolution (DEFORM_ON_PER_STAGE)": "unused by soco_d2",
    "rotated boxes / ROIAlignRotated / nms_rotated": "unused by soco_d2",
    "fast COCO evaluator (COCOeval_opt)": "pycocotools' COCOeval is used (slower, same numbers)",
}


def detectron2_compiled_ops() -> bool:
    """True if detectron2's compiled extension `detectron2._C` loads."""
    try:
        importlib.import_module("detectron2._C")
        return True
    except ImportError:
        return False


def _version(name: str) -> str:
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any import failure is reported as such
        return f"not importable ({type(e).__name__}: {e})"
    return getattr(mod, "__version__", "unknown")


def collect_env(short: bool = False) -> str:
    import torch

    lines = [f"python: {sys.version.split()[0]}"]
    for name in ("soco_d2", "detectron2", "torch", "torchvision", "numpy", "cv2", "fvcore",
                 "pycocotools"):
        lines.append(f"{name}: {_version(name)}")
    lines.append(f"cuda available: {torch.cuda.is_available()}")
    try:
        import cv2

        lines.append(f"cv2.ximgproc (selective search): {hasattr(cv2, 'ximgproc')}")
    except ImportError:
        pass
    has_c = detectron2_compiled_ops()
    lines.append(f"detectron2 compiled ops (_C): {'present' if has_c else 'absent'}")
    if not has_c:
        for feat, note in _C_FEATURES.items():
            lines.append(f"  disabled: {feat} -> {note}")
    if not short:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                lines.append(f"GPU {i}: {torch.cuda.get_device_name(i)}")
        lines.append(f"torch threads: {torch.get_num_threads()}")
        try:
            from detectron2.utils.collect_env import collect_env_info

            lines.append("")
            lines.append(collect_env_info())
        except Exception as e:  # noqa: BLE001 - detectron2's report is best-effort extra detail
            lines.append(f"(detectron2 collect_env failed: {e})")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="versions and ops only")
    args = parser.parse_args(argv)
    print(collect_env(short=args.short))


if __name__ == "__main__":
    main()
