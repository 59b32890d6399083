"""Run specs → stage graph → jobs in a content-addressed store, executed locally, in Docker or on Ray."""
