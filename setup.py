from setuptools import find_packages, setup

setup(
    name="soco_d2",
    version="0.1.0",
    description="Detection-aligned self-supervised pretraining (SoCo and peers) as a Detectron2 plugin",
    packages=find_packages(include=["soco_d2", "soco_d2.*"]),
    python_requires=">=3.10",
    # Runtime dependencies are pinned in requirements.txt and installed by tools/setup_env.sh;
    # detectron2 itself is not on the package index (see README).
    install_requires=[],
)
