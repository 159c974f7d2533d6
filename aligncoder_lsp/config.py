"""One fully defaulted, validated settings tree, and whom it trusts.

Settings arrive as camelCase JSON and are merged onto the defaults field by field. Each
field carries its own check (attrs validators: type, range, choices, run on every
assignment) and says how a change takes effect in a running server (:class:`Applies`);
rules across fields (:data:`RULES`: the prompt budgets must fit the context window...) are
checked after each merge. Invalid input gives one warning and keeps the previous value,
never an exception.

Trust: the settings in :data:`USER_ONLY` name files the server loads or writes, or where it
sends code and which secret it sends along (the engine's URL and API-key variable), so they are
taken only from the user's own configuration (the command line, the environment, the user
config file, ``--config``), never from the client's ``initializationOptions`` or
``workspace/didChangeConfiguration``, which a repository's editor configuration can set.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs.validators import deep_iterable, ge, gt, in_, instance_of, le, not_

logger = logging.getLogger(__name__)

MODES = ("none", "bm25", "aligncoder", "aligncoder-no-enhance", "selective")
ENGINE_FIM_FAMILIES = ("qwen-coder", "codegemma", "starcoder", "deepseek-coder", "codellama")
"""Models whose fill-in-the-middle tokens an engine prompt can be written with (``engine.fim``)."""
ENGINE_FIM = ("auto", "none", *ENGINE_FIM_FAMILIES)

MAX_CONTEXT = 131_072
"""The largest context window (tokens) accepted; also bounds every token budget."""

PROMPT_MARGIN = 32
"""Tokens a prompt needs beyond its budgets: BOS, fill-in-the-middle marks, the context header."""


class Applies(str, enum.Enum):
    """How a changed setting takes effect in a running server."""

    LIVE = "live"
    """Read on every request."""
    MODEL = "reload model"
    """The generator and the sampler are loaded again."""
    RETRIEVER = "new encoder"
    """The encoder is started again and the snippet vectors computed again."""
    INDEX = "re-index"
    """The workspace is indexed again."""
    RESTART = "restart"
    """Takes effect when the server starts."""


def _setting(default: Any, validators: list, allowed: str, applies: Applies = Applies.LIVE,
             user_only: bool = False, env: str = "", converter: Any = None) -> Any:
    """An attrs field with its checks, a readable form of what they allow, and how a change applies."""
    metadata = {"allowed": allowed, "applies": applies, "user_only": user_only, "env": env}
    default = attrs.Factory(list) if default == [] else default
    return attrs.field(default=default, validator=validators, converter=converter, metadata=metadata)


def _integer(default: int, low: int, high: int, **kwargs: Any) -> Any:
    return _setting(default, [instance_of(int), not_(instance_of(bool)), ge(low), le(high)],
                    f"integer {low} to {high}", **kwargs)


def _real(default: float, low: float, high: float, *, above: bool = False, **kwargs: Any) -> Any:
    """A float; ``above`` excludes ``low`` itself."""
    allowed = f"number > {low:g} to {high:g}" if above else f"number {low:g} to {high:g}"
    return _setting(default, [instance_of(float), gt(low) if above else ge(low), le(high)], allowed,
                    converter=_whole_to_float, **kwargs)


def _whole_to_float(value: Any) -> Any:
    """JSON writes 1.0 as 1: integers become floats, everything else is left to the checks."""
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _path(applies: Applies, env: str = "") -> Any:
    return _setting("", [instance_of(str)], "path (user config only)", applies, user_only=True, env=env)


def _choice(default: str, choices: tuple[str, ...], applies: Applies = Applies.LIVE) -> Any:
    return _setting(default, [in_(choices)], ", ".join(choices), applies)


def _flag(default: bool, applies: Applies = Applies.LIVE) -> Any:
    return _setting(default, [instance_of(bool)], "true or false", applies)


def _patterns() -> Any:
    return _setting([], [deep_iterable(instance_of(str), instance_of(list))], "list of strings", Applies.INDEX)


@attrs.define
class ModelSettings:
    """The generator (and sampler) language models run through llama.cpp."""

    generator: str = _path(Applies.MODEL, env="ALIGNCODER_LSP_MODEL")
    """GGUF file of the generator; empty means the embedded Gemma-3-270M."""
    n_ctx: int = _integer(4096, 512, MAX_CONTEXT, applies=Applies.MODEL)
    """Context window in tokens (of the generator and of the sampler)."""
    n_threads: int = _integer(0, 0, 256, applies=Applies.MODEL)
    """CPU threads for llama.cpp; 0: at each prompt, the cores other processes leave free (all when idle)."""
    n_gpu_layers: int = _integer(0, -1, 1000, applies=Applies.MODEL)
    """Layers offloaded to the GPU (needs a GPU build of llama-cpp-python); -1 means all."""
    max_tokens: int = _integer(64, 1, 1024)
    """Upper bound of generated tokens per completion."""


@attrs.define
class RetrievalSettings:
    """Repository context put into the prompt."""

    enabled: bool = _flag(True, Applies.INDEX)
    """Put snippets of other workspace files into the prompt."""
    mode: str = _choice("bm25", MODES)
    """none, bm25, aligncoder, aligncoder-no-enhance or selective (see the README)."""
    top_k: int = _integer(3, 0, 200)
    """Snippets from other files placed into the prompt."""
    dependencies: int = _integer(2, 0, 20)
    """Signatures of what the current file imports placed into the prompt."""
    query_lines: int = _integer(20, 1, 200)
    """Non-empty lines before the cursor that form the retrieval query."""
    context_tokens: int = _integer(600, 0, MAX_CONTEXT)
    """Token budget of the repository context."""
    continuation_lines: int = _integer(8, 0, 200)
    """Lines that follow a retrieved snippet in its file, shown with it."""
    candidates: int = _integer(16, 1, 200)
    """Coarse (BM25) candidates that fine retrieval re-ranks."""
    lexical_weight: float = _real(0.15, 0, 10)
    """Weight of the coarse (BM25) score, scaled to [0, 1], added to the dense score in fine retrieval."""
    drafts: int = _integer(4, 1, 16)
    """Sampled draft continuations that enhance the fine-retrieval query."""
    draft_tokens: int = _integer(32, 1, 256)
    """Upper bound of tokens per draft."""
    draft_prefix_tokens: int = _integer(384, 1, MAX_CONTEXT)
    """Tokens of the code before the cursor in the sampler's prompt (drafts need local context)."""
    draft_context_tokens: int = _integer(300, 0, MAX_CONTEXT)
    """Token budget of the coarse context in the sampler's prompt."""
    draft_temperature: float = _real(0.8, 0, 2, above=True)
    """Sampling temperature of the drafts."""
    draft_top_p: float = _real(0.95, 0, 1, above=True)
    """Nucleus sampling bound of the drafts."""
    threshold: float = _real(-1.0, -1, 1)
    """Selective mode: retrieve when the policy's probability reaches this (negative: the policy's calibrated threshold)."""
    policy: str = _path(Applies.RESTART)
    """Selective-retrieval policy (JSON); empty means the one shipped in weights/."""


@attrs.define
class RetrieverSettings:
    """The dense AlignRetriever (a sentence-transformers encoder) and the snippet vectors."""

    model: str = _path(Applies.RETRIEVER)
    """sentence-transformers folder; empty means the embedded all-MiniLM-L6-v2."""
    precision: str = _choice("auto", ("auto", "float32", "bfloat16"), Applies.RETRIEVER)
    """auto, float32 or bfloat16 (auto: bfloat16 where the CPU has native support)."""
    max_tokens: int = _integer(256, 16, 8192, applies=Applies.RETRIEVER)
    """Tokens of a snippet the encoder reads."""
    threads: int = _integer(1, 0, 256, applies=Applies.RETRIEVER)
    """CPU threads for embedding (kept low so completions keep a core; 0: PyTorch's default)."""
    background: bool = _flag(True)
    """Embed the workspace's snippets in the background after indexing."""


@attrs.define
class IndexSettings:
    """Which workspace files are indexed and how they are cut into snippets."""

    block_lines: int = _integer(15, 1, 200, applies=Applies.INDEX)
    """Upper bound of lines in one Split-Aggregate snippet."""
    max_file_bytes: int = _integer(1_000_000, 1024, 2**26, applies=Applies.INDEX)
    """Files larger than this are skipped."""
    include: list[str] = _patterns()
    """Extra gitignore-style patterns that are indexed even when ignored."""
    exclude: list[str] = _patterns()
    """Extra gitignore-style patterns that are never indexed."""


@attrs.define
class CompletionSettings:
    """Shape of the prompt and of the answer."""

    prefix_tokens: int = _integer(1500, 1, MAX_CONTEXT)
    """Tokens of the code before the cursor kept in the prompt."""
    suffix_tokens: int = _integer(256, 0, MAX_CONTEXT)
    """Tokens of the code after the cursor given to fill-in-the-middle models (0: always left to right)."""
    max_lines: int = _integer(8, 1, 200)
    """Upper bound of lines in a multi-line completion."""
    file_context_tokens: int = _integer(256, 0, MAX_CONTEXT)
    """Tokens of signatures of the current file's definitions that lie before the code in the prompt (its class's members, module functions); 0: none."""


def _matches(pattern: str, what: str) -> Any:
    """A validator: the empty string or a full match of ``pattern``."""
    compiled = re.compile(pattern)

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value and not compiled.fullmatch(value):
            raise ValueError(f"{attribute.name} must be {what}")
    return check


@attrs.define
class EngineSettings:
    """A remote inference engine (OpenAI-compatible ``/v1/completions``) used instead of the in-process model."""

    url: str = _setting("", [instance_of(str), _matches(r"https?://\S+", "an http(s) URL")],
                        "http(s) URL (user config only)", Applies.MODEL, user_only=True, env="ALIGNCODER_LSP_ENGINE")
    """Base URL of the engine, e.g. http://gpu-box:8080 (empty: generate in-process)."""
    model: str = _setting("", [instance_of(str)], "string", Applies.MODEL)
    """Model name sent to the engine (empty: the engine's own choice)."""
    api_key_env: str = _setting("", [instance_of(str), _matches(r"[A-Za-z_][A-Za-z0-9_]*", "a variable name")],
                                "environment variable name (user config only)", Applies.MODEL, user_only=True)
    """Name of the environment variable that holds the engine's API key (never the key itself)."""
    timeout: float = _real(30.0, 0, 600, above=True)
    """Seconds one engine request may take, streaming included, before it is given up."""
    retries: int = _integer(2, 0, 10)
    """Further attempts after a refused connection or a busy engine (HTTP 429/502/503/504), with backoff."""
    concurrency: int = _integer(4, 1, 256, applies=Applies.MODEL)
    """Requests this server sends the engine at once (the drafts' parallel requests count)."""
    fallback: bool = _flag(False)
    """Generate in-process while the engine is unavailable."""
    stop: list[str] = _setting([], [deep_iterable(instance_of(str), instance_of(list))], "list of strings")
    """Stop sequences sent with every request (the engine stops at the model's end of text by itself)."""
    fim: str = _choice("auto", ENGINE_FIM, Applies.MODEL)
    """Fill-in-the-middle: auto (llama.cpp's /infill if the model has FIM tokens), none, or the model's family."""


@attrs.define
class Settings:
    model: ModelSettings = attrs.Factory(ModelSettings)
    engine: EngineSettings = attrs.Factory(EngineSettings)
    retrieval: RetrievalSettings = attrs.Factory(RetrievalSettings)
    retriever: RetrieverSettings = attrs.Factory(RetrieverSettings)
    index: IndexSettings = attrs.Factory(IndexSettings)
    completion: CompletionSettings = attrs.Factory(CompletionSettings)
    cache_dir: str = _path(Applies.RESTART, env="ALIGNCODER_LSP_CACHE")
    """Where assembled models and per-workspace caches live; empty means the user cache."""

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "aligncoder-lsp"


@attrs.frozen
class Rule:
    """``limit`` must be at least the sum of ``terms`` (each a product of settings) plus ``margin``."""

    limit: str
    terms: tuple[tuple[str, ...], ...]
    margin: int
    why: str

    def keys(self) -> set[str]:
        return {self.limit, *(key for term in self.terms for key in term)}

    def need(self, settings: Settings) -> int:
        return sum(math.prod(_get(settings, key) for key in term) for term in self.terms) + self.margin

    def holds(self, settings: Settings) -> bool:
        return _get(settings, self.limit) >= self.need(settings)

    def text(self) -> str:
        total = " + ".join("×".join(term) for term in self.terms) + (f" + {self.margin}" if self.margin else "")
        return f"{self.limit} ≥ {total}: {self.why}"


RULES = (
    Rule("model.nCtx", (("completion.prefixTokens",), ("completion.suffixTokens",), ("retrieval.contextTokens",),
                        ("completion.fileContextTokens",), ("model.maxTokens",)), PROMPT_MARGIN,
         "the prompt and the answer fit the context window (otherwise the prompt's start is cut on every "
         "request and its KV cache is never reused)"),
    Rule("model.nCtx", (("retrieval.draftPrefixTokens",), ("retrieval.draftContextTokens",),
                        ("retrieval.drafts", "retrieval.draftTokens")), PROMPT_MARGIN,
         "the sampler's prompt and all drafts fit its context window"),
    Rule("retrieval.candidates", (("retrieval.topK",),), 0, "fine retrieval picks the top k among the candidates"),
)
"""Rules across settings, checked after every merge."""


# -- merging ---------------------------------------------------------------------------------


def merge(target: Any, data: Any, *, trusted: bool = False, seen: set[str] | None = None) -> list[str]:
    """Merge camelCase ``data`` onto the settings ``target`` in place; return the warnings.

    Untrusted data (the client's) cannot change :data:`USER_ONLY` settings. A value that
    fails its field's check keeps the previous value; when a rule of :data:`RULES` fails,
    the fields of this merge that take part in it keep their previous values. Warnings
    already in ``seen`` are left out and new ones added to it, so that a client repeating
    the same settings hears of each problem once.
    """
    warnings: list[str] = []
    previous: dict[str, Any] = {}
    _merge_section(target, data, "", trusted, previous, warnings)
    if isinstance(target, Settings):
        warnings += _enforce_rules(target, previous)
    if seen is None:
        return warnings
    fresh = [warning for warning in dict.fromkeys(warnings) if warning not in seen]
    seen.update(fresh)
    return fresh


def _merge_section(section: Any, data: Any, where: str, trusted: bool,
                   previous: dict[str, Any], warnings: list[str]) -> None:
    """Merge ``data`` onto the section at key ``where``; ``previous`` collects the replaced values by key."""
    if not isinstance(data, dict):
        warnings.append(f"{_join('settings', where)}: expected an object, got {type(data).__name__}")
        return
    fields = {attribute.name: attribute for attribute in attrs.fields(type(section))}
    for name, value in data.items():
        attribute = fields.get(snake_case(str(name)))
        if attribute is None:
            warnings.append(f"settings.{_join(where, str(name))}: unknown setting, ignored")
            continue
        key = _join(where, camel_case(attribute.name))
        current = getattr(section, attribute.name)
        if attrs.has(type(current)):
            _merge_section(current, value, key, trusted, previous, warnings)
        elif attribute.metadata["user_only"] and not trusted:
            if value != current:
                warnings.append(_refusal(key, attribute))
        else:
            try:
                setattr(section, attribute.name, value)
            except (TypeError, ValueError):
                warnings.append(f"settings.{key}: expected {attribute.metadata['allowed']}, got "
                                f"{json.dumps(value, default=str)}; keeping {json.dumps(current)}")
                continue
            if getattr(section, attribute.name) != current:
                previous.setdefault(key, current)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where and name else where or name


def _refusal(key: str, attribute: attrs.Attribute) -> str:
    env = attribute.metadata["env"]
    return (f"settings.{key}: not taken from the editor's or the workspace's settings (it names files the "
            f"server loads or writes, or where code and keys are sent); set it in {user_config_file()}, a --config file, on the command line"
            f"{f' or in ${env}' if env else ''}")


def _enforce_rules(settings: Settings, previous: dict[str, Any]) -> list[str]:
    """Give the fields just set that break a rule their previous values back."""
    warnings = []
    while broken := next((rule for rule in RULES if rule.keys() & previous.keys() and not rule.holds(settings)), None):
        reverted = sorted(broken.keys() & previous.keys())
        values = ", ".join(f"{key} = {_get(settings, key)}" for key in sorted(broken.keys()))
        warnings.append(f"settings: {broken.text()}; got {values} (needs {broken.need(settings)}); keeping "
                        + ", ".join(f"{key} = {previous[key]}" for key in reverted))
        for key in reverted:
            section, name = _locate(settings, key)
            setattr(section, name, previous.pop(key))
    return warnings


def _locate(settings: Settings, key: str) -> tuple[Any, str]:
    """The section holding the dotted camelCase ``key`` and the field's name in it."""
    *sections, leaf = [snake_case(part) for part in key.split(".")]
    section = settings
    for name in sections:
        section = getattr(section, name)
    return section, leaf


def _get(settings: Settings, key: str) -> Any:
    section, name = _locate(settings, key)
    return getattr(section, name)


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel_case(name: str) -> str:
    return re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)


def changed_keys(before: Settings, after: Settings) -> set[str]:
    """The dotted camelCase keys whose values differ (look each up in :data:`APPLIES`)."""
    return {key for (key, _, _, old), (_, _, _, new) in zip(_leaves(before), _leaves(after)) if old != new}


def _leaves(settings: Any, prefix: str = "") -> Iterator[tuple[str, type, attrs.Attribute, Any]]:
    """(dotted camelCase key, declaring class, attrs attribute, value) of every setting, in
    declaration order."""
    for attribute in attrs.fields(type(settings)):
        key = prefix + camel_case(attribute.name)
        value = getattr(settings, attribute.name)
        if attrs.has(type(value)):
            yield from _leaves(value, key + ".")
        else:
            yield key, type(settings), attribute, value


APPLIES: dict[str, Applies] = {key: attribute.metadata["applies"] for key, _, attribute, _ in _leaves(Settings())}
"""How a change of each setting takes effect in a running server."""
RESTART_REQUIRED = frozenset(key for key, applies in APPLIES.items() if applies is Applies.RESTART)
"""Settings whose change needs a server restart."""
USER_ONLY = frozenset(key for key, _, attribute, _ in _leaves(Settings()) if attribute.metadata["user_only"])
"""Settings taken only from the user's own configuration, never from the client."""


# -- the user's own configuration --------------------------------------------------------------


def user_config_file(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/aligncoder-lsp/config.json`` (default ``~/.config/...``)."""
    base = environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "aligncoder-lsp" / "config.json"


def environment_settings(environ: Mapping[str, str] = os.environ) -> dict:
    """The settings named by environment variables (``ALIGNCODER_LSP_CACHE``, ``ALIGNCODER_LSP_MODEL``,
    ``ALIGNCODER_LSP_ENGINE``)."""
    return nested({key: environ.get(attribute.metadata["env"]) for key, _, attribute, _ in _leaves(Settings())
                   if attribute.metadata["env"]})


def nested(flat: Mapping[str, Any]) -> dict:
    """``{"a.b": 1}`` as ``{"a": {"b": 1}}``; empty and None values are left out."""
    data: dict = {}
    for key, value in flat.items():
        if value is not None and value != "":
            *sections, leaf = key.split(".")
            node = data
            for section in sections:
                node = node.setdefault(section, {})
            node[leaf] = value
    return data


def load_user_settings(config_file: Path | None = None, command_line: Mapping[str, Any] | None = None,
                       environ: Mapping[str, str] = os.environ) -> Settings:
    """The settings of the user's own configuration, later layers winning: the defaults, the
    user config file, ``config_file`` (``--config``), the environment, the ``command_line``.
    A file that cannot be read or parsed is one error and none of its settings; every
    problem is logged."""
    settings = Settings()
    files = [path for path in [user_config_file(environ)] if path.is_file()]
    files += [config_file] if config_file is not None else []
    layers = [(str(path), _read_json(path)) for path in files]
    layers += [("environment", environment_settings(environ)), ("command line", command_line or {})]
    for source, data in layers:
        if data is not None:
            for warning in merge(settings, data, trusted=True):
                logger.warning("%s: %s", source, warning)
    return settings


def _read_json(path: Path) -> Any:
    """The parsed file, or None after logging why it is unusable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        logger.error("cannot read the settings file %s (%s); none of its settings are used", path, error.strerror)
    except ValueError as error:
        logger.error("the settings file %s is not valid JSON (%s); none of its settings are used", path, error)
    return None


# -- documentation ------------------------------------------------------------------------------


def settings_table() -> str:
    """The Markdown table of every setting and the rules across them, as the README shows them."""
    rows = ["| setting | default | allowed | applies | meaning |", "|---|---|---|---|---|"]
    for key, owner, attribute, value in _leaves(Settings()):
        metadata = attribute.metadata
        rows.append(f"| `{key}` | `{json.dumps(value)}` | {metadata['allowed']} | {metadata['applies'].value} "
                    f"| {_field_docs(owner).get(attribute.name, '')} |")
    rules = [f"- {rule.text()}" for rule in RULES]
    return "\n".join(rows) + "\n\nRules across settings:\n\n" + "\n".join(rules)


def describe(settings: Any = None) -> list[tuple[str, Any, str]]:
    """(camelCase key, value, docstring) for every setting, for documentation."""
    return [(key, value, _field_docs(owner).get(attribute.name, ""))
            for key, owner, attribute, value in _leaves(settings or Settings())]


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal after a field) of a settings class."""
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
