from aligncoder_lsp.config import Settings, describe, merge


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


def test_every_setting_is_documented():
    rows = describe()
    assert ("model.maxTokens", 64, "Upper bound of generated tokens per completion.") in rows
    assert all(doc for key, _, doc in rows), [key for key, _, doc in rows if not doc]


def test_readme_documents_every_setting():
    from pathlib import Path

    from aligncoder_lsp.config import settings_table

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert settings_table() in readme
