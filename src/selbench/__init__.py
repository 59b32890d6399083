"""SelBench: a benchmark harness for multimodal data selection."""

__version__ = "0.1.0"
