"""Evaluation: benchmark registry, lmms-eval bridge (HF and vLLM backends), metrics, relative performance."""
