"""One fully defaulted settings tree.

Settings arrive as camelCase JSON (initializationOptions, workspace/didChangeConfiguration,
a JSON file) and are merged onto the defaults field by field; a value of the wrong type or an
unknown key produces a warning and keeps the default, never an exception.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


MODES = ("none", "bm25", "aligncoder", "aligncoder-no-enhance", "selective")


@dataclass
class ModelSettings:
    """The generator (and sampler) language models run through llama.cpp."""

    generator: str = ""
    """GGUF file of the generator; empty means the embedded Gemma-3-270M."""
    n_ctx: int = 4096
    """Context window in tokens."""
    n_threads: int = 0
    """CPU threads for llama.cpp; 0 means all available cores."""
    n_gpu_layers: int = 0
    """Layers offloaded to the GPU (needs a GPU build of llama-cpp-python); -1 means all."""
    max_tokens: int = 64
    """Upper bound of generated tokens per completion."""


@dataclass
class RetrievalSettings:
    """Repository context put into the prompt."""

    enabled: bool = True
    """Put snippets of other workspace files into the prompt."""
    mode: str = field(default="bm25", metadata={"choices": MODES})
    """none, bm25, aligncoder, aligncoder-no-enhance or selective (see the README)."""
    top_k: int = 3
    """Snippets from other files placed into the prompt."""
    dependencies: int = 2
    """Signatures of what the current file imports placed into the prompt."""
    query_lines: int = 20
    """Non-empty lines before the cursor that form the retrieval query."""
    context_tokens: int = 600
    """Token budget of the repository context."""
    continuation_lines: int = 8
    """Lines that follow a retrieved snippet in its file, shown with it."""
    candidates: int = 16
    """Coarse (BM25) candidates that fine retrieval re-ranks."""
    lexical_weight: float = 0.15
    """Weight of the coarse (BM25) score, scaled to [0, 1], added to the dense score in fine retrieval."""
    drafts: int = 4
    """Sampled draft continuations that enhance the fine-retrieval query."""
    draft_tokens: int = 32
    """Upper bound of tokens per draft."""
    draft_prefix_tokens: int = 384
    """Tokens of the code before the cursor in the sampler's prompt (drafts need local context)."""
    draft_context_tokens: int = 300
    """Token budget of the coarse context in the sampler's prompt."""
    draft_temperature: float = 0.8
    """Sampling temperature of the drafts."""
    draft_top_p: float = 0.95
    """Nucleus sampling bound of the drafts."""
    threshold: float = -1.0
    """Selective mode: retrieve when the policy's probability reaches this (negative: the policy's calibrated threshold)."""
    policy: str = ""
    """Selective-retrieval policy (JSON); empty means the one shipped in weights/."""


@dataclass
class RetrieverSettings:
    """The dense AlignRetriever (a sentence-transformers encoder) and the snippet vectors."""

    model: str = ""
    """sentence-transformers folder; empty means the embedded all-MiniLM-L6-v2."""
    precision: str = field(default="auto", metadata={"choices": ("auto", "float32", "bfloat16")})
    """auto, float32 or bfloat16 (auto: bfloat16 where the CPU has native support)."""
    max_tokens: int = 256
    """Tokens of a snippet the encoder reads."""
    threads: int = 1
    """CPU threads for embedding (kept low so completions keep a core)."""
    background: bool = True
    """Embed the workspace's snippets in the background after indexing."""


@dataclass
class IndexSettings:
    """Which workspace files are indexed and how they are cut into snippets."""

    block_lines: int = 15
    """Upper bound of lines in one Split-Aggregate snippet."""
    max_file_bytes: int = 1_000_000
    """Files larger than this are skipped."""
    include: list[str] = field(default_factory=list)
    """Extra gitignore-style patterns that are indexed even when ignored."""
    exclude: list[str] = field(default_factory=list)
    """Extra gitignore-style patterns that are never indexed."""


@dataclass
class CompletionSettings:
    """Shape of the prompt and of the answer."""

    prefix_tokens: int = 1500
    """Tokens of the code before the cursor kept in the prompt."""
    suffix_tokens: int = 256
    """Tokens of the code after the cursor given to fill-in-the-middle models (0: always left to right)."""
    max_lines: int = 8
    """Upper bound of lines in a multi-line completion."""


@dataclass
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    retriever: RetrieverSettings = field(default_factory=RetrieverSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    cache_dir: str = ""
    """Where assembled models and per-workspace caches live; empty means the user cache."""

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        if env := os.environ.get("ALIGNCODER_LSP_CACHE"):
            return Path(env).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "aligncoder-lsp"

    def threads(self) -> int:
        return self.model.n_threads or max(1, len(os.sched_getaffinity(0)))


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def merge(target: Any, data: Any, where: str = "") -> list[str]:
    """Merge camelCase ``data`` onto the dataclass ``target`` in place; return warnings."""
    if not isinstance(data, dict):
        return [f"settings{where}: expected an object, got {type(data).__name__}"]
    warnings: list[str] = []
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in data.items():
        name = snake_case(str(key))
        path = f"{where}.{key}"
        if name not in fields:
            warnings.append(f"settings{path}: unknown setting, ignored")
            continue
        current = getattr(target, name)
        if dataclasses.is_dataclass(current):
            warnings.extend(merge(current, value, path))
        elif _fits(current, value, choices := fields[name].metadata.get("choices", ())):
            setattr(target, name, list(value) if isinstance(current, list) else type(current)(value))
        else:
            expected = " or ".join(choices) if choices else type(current).__name__
            warnings.append(f"settings{path}: expected {expected}, got {value!r}; keeping {current!r}")
    return warnings


def _fits(current: Any, value: Any, choices: tuple = ()) -> bool:
    if choices:
        return value in choices
    if isinstance(current, bool):
        return isinstance(value, bool)
    if isinstance(current, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(current, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(current, list):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, type(current))


def settings_table() -> str:
    """The Markdown table of every setting, as the README shows it."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    rows += [f"| `{key}` | `{json.dumps(value)}` | {doc} |" for key, value, doc in describe()]
    return "\n".join(rows)


def describe(settings: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(camelCase key, default, docstring) for every setting, for documentation."""
    settings = settings or Settings()
    docs = _field_docs(type(settings))
    rows: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(settings):
        key = prefix + re.sub(r"_(\w)", lambda m: m.group(1).upper(), f.name)
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            rows.extend(describe(value, key + "."))
        else:
            rows.append((key, value, docs.get(f.name, "")))
    return rows


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal after a field) of a dataclass."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value
    return docs
