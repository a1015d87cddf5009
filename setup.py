from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="nmt",
    version="0.1.0",
    description="Attention-based neural machine translation after Luong, Pham & Manning (2015)",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nmt", "nmt.*"]),
    package_data={"nmt": ["py.typed"]},
    install_requires=[
        "torch>=2.2",
        "sentencepiece>=0.1.99",
        "sacrebleu>=2.3",
        "datasets>=2.14",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "ruff>=0.4"]},
    entry_points={
        "console_scripts": [
            "nmt-sample = nmt.cli.sample:main",
            "nmt-translate = nmt.cli.translate:main",
            "nmt-evaluate = nmt.cli.evaluate:main",
            "nmt-train = nmt.cli.train:main",
            "nmt-align = nmt.cli.align:main",
            "nmt-shortlist = nmt.cli.shortlist:main",
        ]
    },
)
