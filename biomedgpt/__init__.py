"""biomedgpt: an open BiomedGPT-style generalist biomedical vision-language model.

Importing the package is cheap on purpose: heavy dependencies (torch, transformers, ray,
onnxruntime, gradio) are imported inside the subpackages and CLI subcommands that need them.
"""

__version__ = "0.1.0"
