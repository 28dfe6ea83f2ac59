"""ctpipe: continuous training for tabular models on Kubeflow Pipelines.

Kept import-free on purpose: every pipeline step is a fresh process, and each one
should pay only for the modules it uses.
"""

__version__ = "0.1.0"
