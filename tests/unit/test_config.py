import copy
import json
import logging

import pytest

from aligncoder_lsp import cli
from aligncoder_lsp.config import (
    APPLIES,
    RESTART_REQUIRED,
    RULES,
    USER_ONLY,
    Applies,
    Settings,
    changed_keys,
    describe,
    merge,
    settings_table,
    user_config_file,
)


def _nested(key: str, value) -> dict:
    """``{"a": {"b": value}}`` for the dotted key ``a.b``."""
    head, _, rest = key.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _value(settings: Settings, key: str):
    return {row[0]: row[1] for row in describe(settings)}[key]


def test_camel_case_settings_merge_onto_defaults():
    settings = Settings()
    warnings = merge(settings, {"model": {"maxTokens": 32, "nGpuLayers": -1}, "retrieval": {"topK": 5}})
    assert warnings == []
    assert settings.model.max_tokens == 32
    assert settings.model.n_gpu_layers == -1
    assert settings.retrieval.top_k == 5
    assert settings.retrieval.query_lines == 20


def test_bad_values_warn_and_keep_defaults():
    settings = Settings()
    warnings = merge(settings, {"model": {"maxTokens": "many", "nCtx": True}, "bogus": 1, "index": 3})
    assert settings.model.max_tokens == 64
    assert settings.model.n_ctx == 4096
    assert len(warnings) == 4
    assert any("bogus" in w for w in warnings)


def test_non_object_settings_warn():
    assert merge(Settings(), ["not", "an", "object"])


def test_whole_numbers_are_accepted_for_real_settings():
    settings = Settings()
    assert merge(settings, {"retrieval": {"draftTemperature": 1, "lexicalWeight": 0}}) == []
    assert settings.retrieval.draft_temperature == 1.0 and isinstance(settings.retrieval.draft_temperature, float)


# -- ranges -------------------------------------------------------------------------------

NUMERIC = [key for key, value, _ in describe() if isinstance(value, (int, float)) and not isinstance(value, bool)]


@pytest.mark.parametrize("key", NUMERIC)
@pytest.mark.parametrize("extreme", [-10**9, 10**9])
def test_every_numeric_setting_has_a_range(key, extreme):
    settings = Settings()
    default = _value(settings, key)
    warnings = merge(settings, _nested(key, extreme))
    assert len(warnings) == 1 and key in warnings[0], warnings
    assert _value(settings, key) == default


EDGES = [  # setting, values refused, values accepted
    ("index.blockLines", [0, -3, 201], [1, 200]),  # 0 hung the index thread
    ("retrieval.queryLines", [0, 201], [1, 200]),  # 0 made the whole file the query
    ("retrieval.draftTemperature", [0, -0.5, 2.5], [0.01, 2]),  # 0 failed every aligncoder request
    ("retrieval.drafts", [0, 17], [1, 16]),  # 0 wrote past a zero-size llama.cpp batch
    ("retrieval.draftTopP", [0, 1.01], [0.01, 1]),
    ("retrieval.draftTokens", [0, 257], [1, 256]),
    ("retrieval.threshold", [1.01, -1.5], [-1, 0, 1]),
    ("retrieval.lexicalWeight", [-0.1, 11], [0, 10]),
    ("retrieval.topK", [-1], [0, 16]),
    ("retrieval.dependencies", [-1, 21], [0, 20]),
    ("retrieval.contextTokens", [-1], [0, 1000]),
    ("retrieval.continuationLines", [-1, 201], [0, 200]),
    ("retrieval.candidates", [201], [16, 200]),
    ("retrieval.draftPrefixTokens", [0], [1, 1000]),
    ("retrieval.draftContextTokens", [-1], [0, 1000]),
    ("model.nCtx", [0, 511, 131073], [8192, 131072]),
    ("model.maxTokens", [0, 1025], [1, 1024]),
    ("model.nThreads", [-1, 257], [0, 256]),
    ("model.nGpuLayers", [-2, 1001], [-1, 0, 1000]),
    ("retriever.maxTokens", [0, 15, 8193], [16, 512]),
    ("retriever.threads", [-1, 257], [0, 256]),
    ("index.maxFileBytes", [0, 1023, 2**26 + 1], [1024, 2**26]),
    ("engine.timeout", [0, -1, 601], [0.5, 600]),
    ("engine.retries", [-1, 11], [0, 10]),
    ("engine.concurrency", [0, 257], [1, 256]),
    ("completion.prefixTokens", [0], [1, 2000]),
    ("completion.suffixTokens", [-1], [0, 1000]),
    ("completion.maxLines", [0, 201], [1, 200]),
    ("completion.fileContextTokens", [-1], [0, 1000]),
]


def test_edges_cover_every_numeric_setting():
    assert sorted(key for key, _, _ in EDGES) == sorted(NUMERIC)


@pytest.mark.parametrize(("key", "refused", "accepted"), EDGES)
def test_ranges(key, refused, accepted):
    for value in refused:
        settings = Settings()
        warnings = merge(settings, _nested(key, value))
        assert len(warnings) == 1 and f"settings.{key}:" in warnings[0] and "keeping" in warnings[0], (value, warnings)
        assert _value(settings, key) == _value(Settings(), key)
    for value in accepted:
        settings = Settings()
        assert merge(settings, _nested(key, value)) == [], value
        assert _value(settings, key) == value


def test_choices_and_lists_are_checked():
    settings = Settings()
    warnings = merge(settings, {"retrieval": {"mode": "magic"}, "retriever": {"precision": "int4"},
                                "index": {"include": ["ok", 3], "exclude": "build/"}})
    assert len(warnings) == 4
    assert settings.retrieval.mode == "bm25" and settings.index.include == [] and settings.index.exclude == []
    assert "none, bm25" in warnings[0]


def test_a_refused_value_keeps_the_previous_value_not_the_default():
    settings = Settings()
    merge(settings, {"index": {"blockLines": 30}})
    assert merge(settings, {"index": {"blockLines": 0}})
    assert settings.index.block_lines == 30


def test_assignment_in_code_is_validated_too():
    settings = Settings()
    with pytest.raises(ValueError):
        settings.index.block_lines = 0


# -- rules across settings ------------------------------------------------------------------

def test_defaults_keep_every_rule():
    assert all(rule.holds(Settings()) for rule in RULES)


def test_context_window_below_the_prompt_budgets_is_refused():
    settings = Settings()
    warnings = merge(settings, {"model": {"nCtx": 1024}, "retrieval": {"topK": 5}})
    assert len(warnings) == 1 and "model.nCtx" in warnings[0] and "completion.prefixTokens" in warnings[0]
    assert settings.model.n_ctx == 4096
    assert settings.retrieval.top_k == 5  # not part of the broken rule: applied


def test_smaller_window_with_smaller_budgets_in_one_update_is_accepted():
    settings = Settings()
    update = {"model": {"nCtx": 1024, "maxTokens": 32},
              "completion": {"prefixTokens": 400, "suffixTokens": 100, "fileContextTokens": 100},
              "retrieval": {"contextTokens": 300, "draftPrefixTokens": 200, "draftContextTokens": 200}}
    assert merge(settings, update) == []
    assert settings.model.n_ctx == 1024


def test_budget_above_the_window_keeps_the_budget():
    settings = Settings()
    warnings = merge(settings, {"completion": {"prefixTokens": 4000}})
    assert len(warnings) == 1 and "completion.prefixTokens = 1500" in warnings[0]
    assert settings.completion.prefix_tokens == 1500


def test_drafts_must_fit_the_samplers_window():
    settings = Settings()
    warnings = merge(settings, {"retrieval": {"drafts": 16, "draftTokens": 256}})
    assert len(warnings) == 1 and "retrieval.drafts×retrieval.draftTokens" in warnings[0]
    assert (settings.retrieval.drafts, settings.retrieval.draft_tokens) == (4, 32)
    assert merge(settings, {"model": {"nCtx": 8192}, "retrieval": {"drafts": 16, "draftTokens": 256}}) == []


def test_top_k_must_not_exceed_the_candidates():
    settings = Settings()
    warnings = merge(settings, {"retrieval": {"topK": 17}})
    assert len(warnings) == 1 and "retrieval.candidates" in warnings[0]
    assert settings.retrieval.top_k == 3
    assert merge(settings, {"retrieval": {"topK": 17, "candidates": 32}}) == []
    assert merge(settings, {"retrieval": {"candidates": 8}})  # now below topK
    assert settings.retrieval.candidates == 32


# -- warn once --------------------------------------------------------------------------------

def test_a_repeated_problem_is_reported_once():
    settings, seen = Settings(), set()
    update = {"index": {"blockLines": 0}, "cacheDir": "/tmp/planted", "bogus": 1, "model": {"nCtx": 1024}}
    assert len(merge(settings, update, seen=seen)) == 4
    assert merge(settings, update, seen=seen) == []
    assert len(merge(settings, {"index": {"blockLines": -1}}, seen=seen)) == 1  # a different problem


# -- trust ------------------------------------------------------------------------------------

def test_paths_the_server_loads_are_user_only():
    assert USER_ONLY == {"cacheDir", "model.generator", "retriever.model", "retrieval.policy", "engine.url",
                         "engine.apiKeyEnv"}


def test_a_workspace_cannot_send_completions_or_keys_elsewhere():
    settings = Settings()
    warnings = merge(settings, {"engine": {"url": "http://attacker.example", "apiKeyEnv": "AWS_SECRET_ACCESS_KEY",
                                           "model": "m", "timeout": 5}})
    assert len(warnings) == 2 and all("where code and keys are sent" in warning for warning in warnings)
    assert "ALIGNCODER_LSP_ENGINE" in next(w for w in warnings if "engine.url" in w)
    assert (settings.engine.url, settings.engine.api_key_env) == ("", "")
    assert (settings.engine.model, settings.engine.timeout) == ("m", 5.0)


def test_engine_settings_are_checked():
    settings = Settings()
    warnings = merge(settings, {"engine": {"url": "gpu-box:8080", "apiKeyEnv": "MY KEY", "timeout": 0,
                                           "retries": -1}}, trusted=True)
    assert len(warnings) == 4
    assert (settings.engine.url, settings.engine.api_key_env, settings.engine.timeout) == ("", "", 30.0)
    assert merge(settings, {"engine": {"url": "https://gpu-box:8080/", "apiKeyEnv": "ENGINE_KEY"}}, trusted=True) == []


def test_client_cannot_set_user_only_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    settings = Settings()
    update = {"cacheDir": "/tmp/planted", "model": {"generator": "/tmp/planted.gguf", "maxTokens": 16},
              "retriever": {"model": "/tmp/planted-encoder"}, "retrieval": {"policy": "/tmp/policy.json"}}
    warnings = merge(settings, update)
    assert len(warnings) == 4
    assert all(str(tmp_path / "aligncoder-lsp" / "config.json") in warning for warning in warnings)
    assert "ALIGNCODER_LSP_CACHE" in next(w for w in warnings if "cacheDir" in w)
    assert (settings.cache_dir, settings.model.generator, settings.retriever.model, settings.retrieval.policy) == \
        ("", "", "", "")
    assert settings.model.max_tokens == 16
    assert merge(settings, update, trusted=True) == []
    assert settings.cache_dir == "/tmp/planted" and settings.retriever.model == "/tmp/planted-encoder"


def test_client_repeating_the_current_value_is_not_refused():
    assert merge(Settings(), {"cacheDir": "", "model": {"generator": ""}}) == []


# -- run-time changes ---------------------------------------------------------------------------

def test_changed_keys():
    before = Settings()
    after = copy.deepcopy(before)
    merge(after, {"index": {"blockLines": 20, "exclude": ["gen/"]}, "model": {"maxTokens": 64, "nCtx": 8192}})
    assert changed_keys(before, after) == {"index.blockLines", "index.exclude", "model.nCtx"}
    assert changed_keys(before, copy.deepcopy(before)) == set()


def test_every_setting_says_how_a_change_applies():
    assert set(APPLIES) == {key for key, _, _ in describe()}
    assert RESTART_REQUIRED == {key for key, how in APPLIES.items() if how is Applies.RESTART}
    assert "cacheDir" in RESTART_REQUIRED
    assert APPLIES["index.blockLines"] is Applies.INDEX and APPLIES["retriever.model"] is Applies.RETRIEVER
    assert APPLIES["model.nCtx"] is Applies.MODEL and APPLIES["retrieval.topK"] is Applies.LIVE


# -- the user's own configuration ------------------------------------------------------------------

@pytest.fixture
def user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("ALIGNCODER_LSP_CACHE", "ALIGNCODER_LSP_MODEL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config" / "aligncoder-lsp" / "config.json"
    path.parent.mkdir(parents=True)
    return path


def _load(*argv: str) -> Settings:
    return cli.load_settings(cli._parser().parse_args(["doctor", *argv]))


def test_user_config_file_is_read_and_trusted(user_config):
    assert user_config_file() == user_config
    user_config.write_text(json.dumps({"cacheDir": "/srv/cache", "model": {"maxTokens": 16, "generator": "/m.gguf"}}))
    settings = _load()
    assert (settings.cache_dir, settings.model.max_tokens, settings.model.generator) == ("/srv/cache", 16, "/m.gguf")


def test_user_config_file_defaults_to_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_config_file() == tmp_path / ".config" / "aligncoder-lsp" / "config.json"


def test_invalid_user_config_is_one_error_and_the_defaults(user_config, caplog):
    user_config.write_text('{"model": {"maxTokens": 16,}}')
    with caplog.at_level(logging.WARNING):
        settings = _load()
    assert settings == Settings()
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.ERROR
    assert str(user_config) in caplog.messages[0] and "line 1" in caplog.messages[0]


def test_values_in_the_user_config_are_checked(user_config, caplog):
    user_config.write_text(json.dumps({"index": {"blockLines": 0}, "model": {"maxTokens": 16}}))
    with caplog.at_level(logging.WARNING):
        settings = _load()
    assert settings.index.block_lines == 15 and settings.model.max_tokens == 16
    assert len(caplog.messages) == 1 and str(user_config) in caplog.messages[0]


def test_layers_in_order_file_config_environment_command_line(user_config, tmp_path, monkeypatch):
    user_config.write_text(json.dumps({"cacheDir": "/from/user", "model": {"maxTokens": 16, "nThreads": 2}}))
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({"model": {"maxTokens": 24, "generator": "/from/config.gguf"}}))
    monkeypatch.setenv("ALIGNCODER_LSP_CACHE", "/from/env")
    monkeypatch.setenv("ALIGNCODER_LSP_MODEL", "/from/env.gguf")
    settings = _load("--config", str(explicit), "--threads", "3")
    assert settings.model.max_tokens == 24
    assert settings.cache_dir == "/from/env" and settings.model.generator == "/from/env.gguf"
    assert settings.model.n_threads == 3
    assert _load("--config", str(explicit), "--model", "/from/cli.gguf").model.generator == "/from/cli.gguf"


def test_missing_config_file_and_bad_command_line_values_are_reported(user_config, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        settings = _load("--config", str(tmp_path / "missing.json"), "--threads", "-3")
    assert settings == Settings()
    assert len(caplog.messages) == 2
    assert "missing.json" in caplog.messages[0] and "model.nThreads" in caplog.messages[1]


# -- documentation ----------------------------------------------------------------------------------

def test_every_setting_is_documented():
    rows = describe()
    assert ("model.maxTokens", 64, "Upper bound of generated tokens per completion.") in rows
    assert all(doc for key, _, doc in rows), [key for key, _, doc in rows if not doc]


def test_table_shows_ranges_how_changes_apply_and_the_rules():
    table = settings_table()
    assert "| `index.blockLines` | `15` | integer 1 to 200 | re-index |" in table
    assert "user config only" in table.split("`cacheDir`")[1].split("\n")[0]
    assert "model.nCtx" in table.split("| setting |")[1].split("\n\n", 1)[-1]


def test_readme_documents_every_setting():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert settings_table() in readme
