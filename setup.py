"""Install simmim_tf: image + text fusion through a TF-GNN graph, in Keras 3."""

from setuptools import find_packages, setup

setup(
    name="simmim_tf",
    version="0.1.0",
    description=(
        "Keras 3 image+text model: keras-hub ResNet and BERT encoders fused by "
        "attention message passing on a TF-GNN GraphTensor."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["simmim_tf", "simmim_tf.*"]),
    package_data={
        "simmim_tf.data": ["emoji_labels.json", "sample/*", "sample/LICENSES/*"]
    },
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        # ResumableBackupAndRestore overrides BackupAndRestore's private
        # _save_model/_load_model (Keras has no public hook): tested with 3.15.
        "keras>=3.15,<3.16",
        # SimMIMPreprocessor uses keras-hub's preprocessing_function and
        # _allow_python_workflow (no public equivalent): tested with 0.32.
        "keras-hub>=0.32,<0.33",
        "tensorflow-gnn==1.0.3",
        "tensorflow-datasets>=4.9.8,<5",
        # tensorflow-datasets imports it lazily without declaring it.
        "importlib_resources>=6",
        "tensorboard>=2.20,<3",
        "tensorflow-serving-api>=2.21,<2.22",
        "ai-edge-litert>=2.0,<3",
        "pillow>=10",
        # Rasterises the SVG artists' emoji (a self-contained wheel: no Cairo).
        "resvg-py>=0.5,<0.6",
        "numpy>=1.26,<3",
        "h5py>=3.10",
        "pyyaml>=6",
        "matplotlib>=3.8",
        # keras-hub reads Hugging Face checkpoints (MiniLM) with its numpy reader.
        "safetensors>=0.4,<1",
    ],
    extras_require={
        # Approximate search of galleries past 100 k items (GalleryIndex.nearest).
        "faiss": ["faiss-cpu>=1.8,<2"],
        # grain: keras-hub's shared TestCase (run_backbone_test, ...) imports
        # it; faiss-cpu: so that the tests search with HNSW too.
        "dev": ["pytest>=8", "ruff>=0.6", "grain>=0.2.18,<0.3", "faiss-cpu>=1.8,<2"],
    },
    entry_points={"console_scripts": ["simmim-tf=simmim_tf.cli:main"]},
)
