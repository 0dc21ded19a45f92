"""Packaging for the HumanSD rebuild. Pinned, tested versions live in requirements.txt."""

from setuptools import find_packages, setup

setup(
    name="humansd",
    version="0.1.0",
    description="HumanSD: a native skeleton-guided diffusion model for human image generation (rebuild)",
    packages=find_packages(include=["ldm", "ldm.*", "comparison_models", "comparison_models.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy",
        "pillow",
        "scipy",
        "omegaconf>=2.3",
        "einops",
        "safetensors",
        "open_clip_torch>=2.20",
        "opencv-python-headless",
        "tqdm",
        "transformers>=4.40",  # the SD-1.x CLIP text encoder of the comparison models (built offline from config)
    ],
    extras_require={
        "train": ["lightning>=2.2", "albumentations>=2.0", "pycocotools"],
        "demo": ["gradio>=5", "gradio_client", "matplotlib"],
        "metrics": ["pycocotools", "torchmetrics", "torch-fidelity", "matplotlib"],
        "dev": ["pytest", "ruff", "diffusers"],
    },
)
