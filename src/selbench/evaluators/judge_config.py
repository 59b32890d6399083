"""``evaluation.judge`` — the judge's configuration alone (the stage contracts import it; the judge's runtime
lives in selbench.evaluators.judge, so editing that does not move other stages' job ids)."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JudgeApi = Literal["client", "endpoint"]
OPENAI = "https://api.openai.com/v1"


class JudgeError(RuntimeError):
    """The judge cannot be used as configured: names the URL, the model and what the server said."""


class Judge(BaseModel):
    """``evaluation.judge``: a model name alone (``judge: gpt-4-0613``, OpenAI's API, key in OPENAI_API_KEY) or
    the full form ``{model, base_url, api_key_env, max_failed, retries}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    base_url: str = OPENAI  # an OpenAI-compatible server's /v1 URL (a local vLLM: http://HOST:PORT/v1)
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (never the key itself)
    max_failed: float = Field(default=0.0, ge=0.0, le=1.0)  # fraction of a benchmark's items the judge may fail
    retries: int = Field(default=2, ge=0, le=10)  # the preflight's extra attempts (lmms-eval retries on its own)

    @model_validator(mode="before")
    @classmethod
    def _name_only(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, str) else value

    def key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise JudgeError(f"evaluation.judge: the environment variable {self.api_key_env} (api_key_env) holding "
                             f"the judge's API key is not set (a local server without keys: set it to any value, "
                             f"e.g. EMPTY)")
        return key

    def url(self, api: JudgeApi) -> str:
        base = self.base_url.rstrip("/")
        return f"{base}/chat/completions" if api == "endpoint" else base

    def record(self) -> dict:
        """What the results keep of the judge (no key)."""
        return {"model": self.model, "base_url": self.base_url}
