"""mobileseg-paddle: MobileSeg models for PaddleSeg on Paddle 3.

Install the tested, pinned set with ``pip install -r requirements.txt && pip install -e .``
(``requirements.txt`` is the lock; the ranges below only state what the code needs)."""

from setuptools import find_packages, setup

setup(
    name="mobileseg-paddle",
    version="0.1.0",
    description="MobileSeg semantic segmentation for phones and edge devices, on PaddleSeg",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.8,<3.12",
    packages=find_packages(include=["mobileseg_paddle", "mobileseg_paddle.*",
                                    "deploy", "deploy.*"]),
    include_package_data=True,
    install_requires=[
        "paddlepaddle>=3.3,<3.4",  # or paddlepaddle-gpu of the same version
        "paddleseg==2.8.0",
        "numpy<2",  # paddleseg pins opencv-python<=4.6.0, built against numpy 1.x
        "opencv-python<=4.6.0",
        "PyYAML",
    ],
    extras_require={
        "onnx": ["paddle2onnx", "onnx", "onnxruntime"],
        "bench": ["matplotlib"],
        "test": ["pytest"],
    },
    entry_points={"console_scripts": ["mobileseg=mobileseg_paddle.cli:main"]},
)
