"""VLM loading, tiny models built from configs, and the feature-extraction engine."""
