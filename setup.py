"""Install soco_d2 into an environment that already has PyTorch and detectron2.

``pip install .`` pulls the plugin's own runtime dependencies; torch, torchvision and
detectron2 are left to the user (detectron2 is not on the package index, and each needs a build
matched to the local CUDA). ``requirements.txt`` pins the exact versions the tests run with.

The YAML configs are shipped inside the wheel as ``soco_d2/model_zoo/configs/`` (copied from
``configs/`` at build time; ``soco_d2.model_zoo.get_config_file`` finds them there, or in the
checkout).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

_HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``configs/**/*.yaml`` into ``soco_d2/model_zoo/configs``.

    Copied into the build folder, not the source tree, so a checkout never holds two copies.
    """

    def _config_files(self):
        root = os.path.join(_HERE, "configs")
        return sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)), root

    def run(self):
        super().run()
        files, root = self._config_files()
        target = os.path.join(self.build_lib, "soco_d2", "model_zoo", "configs")
        for src in files:
            dst = os.path.join(target, os.path.relpath(src, root))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)

    def get_outputs(self, include_bytecode=1):
        files, root = self._config_files()
        target = os.path.join(self.build_lib, "soco_d2", "model_zoo", "configs")
        copied = [os.path.join(target, os.path.relpath(src, root)) for src in files]
        return super().get_outputs(include_bytecode) + copied


setup(
    name="soco_d2",
    version="0.1.0",
    description=(
        "Detection-aligned self-supervised pretraining "
        "(SoCo, MoCo v2, DenseCL, DetCo, SIM, BYOL) "
        "as a Detectron2 plugin"
    ),
    packages=find_packages(include=["soco_d2", "soco_d2.*"]),
    python_requires=">=3.10",
    # Lower bounds only, so installing the plugin never replaces what an existing detectron2
    # environment already has. Not listed on purpose: torch, torchvision, detectron2.
    install_requires=[
        "numpy>=1.21",
        # selective search lives in cv2.ximgproc (contrib); do not mix with opencv-python
        "opencv-contrib-python-headless>=4.5",
        "Pillow>=7.1",
        "pycocotools>=2.0.2",
        "fvcore>=0.1.5",
        "iopath>=0.1.7",
        "matplotlib>=3.3",
        "tabulate>=0.8",
        "tqdm>=4.29",
        # detectron2's ViT backbone (ViTDet fine-tuning, SIM) imports timm
        "timm>=0.9",
        # soco-d2-submit: SLURM jobs
        "submitit>=1.5",
    ],
    # every command a user runs, from the installed package (tools/*.py are checkout shims)
    entry_points={
        "console_scripts": [
            "soco-d2-train = soco_d2.tools.train_net:cli",
            "soco-d2-pipeline = soco_d2.tools.pipeline:main",
            "soco-d2-convert = soco_d2.tools.convert_pretrained:main",
            "soco-d2-proposals = soco_d2.tools.selective_search:main",
            "soco-d2-convert-proposals = soco_d2.tools.convert_proposals:main",
            "soco-d2-visualize-proposals = soco_d2.tools.visualize_proposals:main",
            "soco-d2-plot-metrics = soco_d2.tools.plot_metrics:main",
            "soco-d2-probe-features = soco_d2.tools.probe_features:main",
            "soco-d2-sim-spectrum = soco_d2.tools.sim_spectrum:main",
            "soco-d2-benchmark = soco_d2.tools.benchmark:main",
            "soco-d2-benchmark-proposals = soco_d2.tools.benchmark_proposals:main",
            "soco-d2-benchmark-loader = soco_d2.tools.benchmark_loader:main",
            "soco-d2-submit = soco_d2.tools.submit:main",
        ]
    },
    cmdclass={"build_py": BuildPyWithConfigs},
    zip_safe=False,
)
