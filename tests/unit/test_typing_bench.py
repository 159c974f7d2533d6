"""The typing benchmark's simulated programmer, its acceptance rule, its check for unclosed
suggestions and its report, without a server."""

import random
import tarfile
import textwrap
import time

import pytest
from lsprotocol import types

from aligncoder_lsp import cli
from aligncoder_lsp.balance import unclosed
from aligncoder_lsp.evaluation.typing_bench import (
    Buffer,
    Request,
    Run,
    insertion,
    markdown,
    negotiated,
    repositories,
    settle,
    summarize,
)
from aligncoder_lsp.evaluation.typing_model import (
    Pace,
    Span,
    accepted_text,
    candidate_spans,
    keystrokes,
    next_keystroke,
    sample_spans,
)

PYTHON = textwrap.dedent('''\
    import os


    class Box:
        size: int = 1

        def grow(self, by):
            if by > 0:
                self.size += by
                print(self.size)
            return self.size


    def one_liner(x):
        if x: return x
        return None
''')

JAVA = textwrap.dedent('''\
    class Greeter {
        private final String name;

        Greeter(String name) {
            this.name = name;
        }

        String greet(int times) {
            for (int i = 0; i < times; i++) {
                System.out.println(name);
            }
            return name;
        }
    }
''')


def test_candidate_spans_are_bodies_blocks_and_lines_of_whole_lines():
    spans = candidate_spans(PYTHON, "python")
    assert spans["body"] == [(7, 11), (14, 16)]  # grow's and one_liner's bodies
    assert spans["block"] == [(8, 10)]  # the if's body; `if x: return x` has no block on lines of its own
    assert (0, 1) in spans["line"] and (4, 5) in spans["line"] and (10, 11) in spans["line"]
    assert (3, 11) not in spans["block"]  # a class body is not a span
    assert candidate_spans(PYTHON, "python", max_lines=2)["body"] == [(14, 16)]


def test_candidate_spans_of_java_stop_inside_the_braces():
    spans = candidate_spans(JAVA, "java")
    assert spans["body"] == [(4, 5), (8, 12)]  # the constructor's and greet's statements
    assert spans["block"] == [(9, 10)]
    assert (11, 12) in spans["line"] and (1, 2) not in spans["line"]  # fields are not statements


def test_a_cut_span_puts_the_cursor_after_the_first_lines_indentation():
    span = Span.cut("box.py", "python", "body", PYTHON, 7, 11)
    assert span.prefix + span.target + span.suffix == PYTHON
    assert span.prefix.endswith("    def grow(self, by):\n        ")
    assert span.target.startswith("if by > 0:") and span.target.endswith("return self.size")
    assert span.suffix.startswith("\n\n\ndef one_liner")


def test_sampled_spans_are_seeded_from_distinct_files_and_kinds_taken_in_turn(fixture_workspace):
    first = sample_spans(fixture_workspace, 4, random.Random(7))
    assert first == sample_spans(fixture_workspace, 4, random.Random(7))
    assert len({span.relative for span in first}) == 4
    assert first[0].kind == "body" and first[1].kind in ("block", "body", "line")
    for span in first:
        text = (fixture_workspace / span.relative).read_text()
        assert span.prefix + span.target + span.suffix == text
        assert 1 <= span.end - span.start <= 15 and span.target.strip()
    assert len(sample_spans(fixture_workspace, 50, random.Random(7))) == 5  # one span per file
    assert all(span.end - span.start == 1 for span in sample_spans(fixture_workspace, 5, random.Random(1), 1))


def test_enter_and_the_next_lines_indentation_are_one_keystroke():
    assert keystrokes("    ", "if x:\n        y\n\n    z") == ["i", "f", " ", "x", ":", "\n        ", "y", "\n",
                                                            "\n    ", "z"]
    assert next_keystroke("        ", "  y = 1") == "  "  # the rest of an indentation after an accepted line
    assert next_keystroke("    x", " = 1") == " "


def test_pace_pauses_at_line_starts_and_word_ends_and_is_quick_inside_words():
    pace = Pace()
    rng = random.Random(3)
    line_starts = [pace.pause("    ", "return", rng) for _ in range(200)]
    word_ends = [pace.pause("    return", " x", rng) for _ in range(200)]
    punctuation = [pace.pause("    f(", "x)", rng) for _ in range(200)]
    in_words = sorted(pace.pause("    ret", "urn", rng) for _ in range(201))
    assert all(0.8 <= pause <= 2.0 for pause in line_starts)
    assert all(0.3 <= pause <= 0.9 for pause in word_ends + punctuation)
    assert 0.1 < in_words[100] < 0.14 and in_words[-1] < 0.5
    assert [pace.pause("", "x", random.Random(5)) for _ in range(3)] == [Pace().pause("", "x", random.Random(5))] * 3


@pytest.mark.parametrize("suggestion, rest, accepted", [
    ("total = 0\nfor x in xs:", "total = 0\nfor x in xs:\n    total += x", "total = 0\nfor x in xs:"),
    ("total = 0\nfor y in ys:", "total = 0\nfor x in xs:", "total = 0"),
    ("total = 1", "total = 0", ""),
    ("\n    x = 1", "\n    x = 1", "\n    x = 1"),
    ("\n    x = 2", "\n    x = 1", ""),  # an empty first line is nothing to take
    ("   ", "   x", ""),
])
def test_the_user_takes_a_suggestion_whole_or_its_first_line_when_it_matches(suggestion, rest, accepted):
    assert accepted_text(suggestion, rest) == accepted


def test_an_inline_items_range_is_read_against_the_text_at_the_cursor():
    text, cursor = "x = fo)\n", 6

    def item(new_text, start, end=6):
        return types.InlineCompletionItem(new_text, range=types.Range(types.Position(0, start), types.Position(0, end)))

    assert insertion(types.InlineCompletionItem("o(1)"), text, cursor, "utf-16") == "o(1)"
    assert insertion(item("foo(1)", 4), text, cursor, "utf-16") == "o(1)"
    assert insertion(item("bar(1)", 4), text, cursor, "utf-16") is None
    assert insertion(item("o(1)", 6, 7), text, cursor, "utf-16") is None
    assert insertion(types.InlineCompletionItem(types.StringValue("o()")), text, cursor, "utf-16") == "o()"


def test_the_buffer_speaks_the_negotiated_position_encoding():
    buffer = Buffer("s = '😀'\n", 7, "utf-16")
    assert buffer.position() == types.Position(0, 8)
    assert buffer.insert("\n") == types.Position(0, 8)
    assert buffer.position() == types.Position(1, 0) and buffer.version == 2
    assert Buffer("s = '😀'\n", 7, "utf-32").position() == types.Position(0, 7)


def test_the_client_follows_the_servers_position_encoding_and_sync_kind():
    incremental = types.TextDocumentSyncOptions(change=types.TextDocumentSyncKind.Incremental)
    assert negotiated(types.ServerCapabilities(position_encoding=types.PositionEncodingKind.Utf8,
                                               text_document_sync=incremental)) == ("utf-8", True)
    assert negotiated(types.ServerCapabilities(text_document_sync=types.TextDocumentSyncKind.Full)) == ("utf-16", False)


@pytest.mark.parametrize("prefix, suggestion, suffix, left_open", [
    ("x = foo(", "a, b)", "\n\ny = 1\n", []),
    ("x = foo(", "a, b", "\n\ny = 1\n", ["("]),
    ("", "x = [1,\n     2", "\n\ny = (3)\n", ["["]),
    ("d = {\n    ", "'a': 1,", "\n}\n", []),  # the suffix closes the prefix's brace
    ("d = {\n    ", "'a': [1,", "\n}\n", ["{", "["]),  # a mismatched closer closes nothing
    ("x = ", "'abc", "\ny = 2\n", ["string"]),
    ("x = ", "f'abc", "\ny = 2\n", ["string"]),
    ("x = ", '"""abc', "\ny = (2)\n", ["string"]),
    ("x = ", '"""abc', '\n"""\n', []),
    ("x = 'a(", "b'", "\n", []),
    ("def f():\n    if x:\n        y = 1\n", "  z = g(1)", "\n", []),  # a bad dedent is no reason to give up
    ("x = 1  # (", " not code", "\n", []),
])
def test_unclosed_python(prefix, suggestion, suffix, left_open):
    assert [opening.kind for opening in unclosed(prefix, suggestion, suffix, "python")] == left_open


@pytest.mark.parametrize("prefix, suggestion, suffix, left_open", [
    ("int x = foo(", "a, b);", "\n}\n", []),
    ("int x = foo(", "a, b", "\n}\n", ["("]),
    ("void f() {\n    ", "g();", "\n}\n", []),
    ("char c = ", "')';", "\n", []),
    ("String s = ", '"abc', ";\n}\n", ["string"]),
    ("String s = ", '"a\\"b";', "\n", []),
    ("", "/* note", "\nint x;\n", ["comment"]),
    ("", "// (", "\nint x;\n", []),
    ('String s = """\n', "abc", '\n""";\n', []),
])
def test_unclosed_java(prefix, suggestion, suffix, left_open):
    assert [opening.kind for opening in unclosed(prefix, suggestion, suffix, "java")] == left_open


def test_other_languages_are_not_checked():
    assert unclosed("x = (", "1", "", "rust") is None


def _request(latency, in_time, insertion, line_start=False, accepted=0, text="x = \n", cursor=4):
    request = Request(100.0, line_start, text, cursor, "python", "utf-16", insertion=insertion, in_time=in_time,
                      cancelled=not in_time, accepted=accepted)
    request.answered = None if latency is None else 100.0 + latency / 1000
    return request


def test_the_summary_counts_what_the_user_saw_and_took():
    run = Run("repo", "bm25", spans=2, characters=100, accepted_characters=20, keystrokes_needed=90,
              keystrokes_pressed=72, typing_seconds=30.0, cpu_seconds=12.0, server_peak_rss_mib=400.4,
              worker_peak_rss_mib=[120.0, 90.0])
    run.requests = [
        _request(200, True, "1", line_start=True, accepted=1),
        _request(300, True, "foo(", accepted=0),  # shown, not taken, leaves "(" open
        _request(400, True, ""),  # answered in time, nothing to show
        _request(900, False, "late"),  # arrived after the next keystroke
        _request(None, False, None, line_start=True),  # cancelled
    ]
    report = summarize("bm25", [run])
    assert report["requests"] == {"sent": 5, "answered_in_time": 3, "answered_in_time_share": 0.6, "shown": 2,
                                  "accepted": 1, "cancelled": 2, "errors": 0}
    assert report["line_start_requests"]["answered_in_time_share"] == 0.5
    assert report["latency_ms"]["shown"] == {"count": 2, "p50": 250, "p90": 300, "p99": 300}
    assert report["characters"] == {"total": 100, "typed": 80, "accepted": 20, "accepted_per_typed": 0.25}
    assert report["keystrokes"]["saved_share"] == 0.2
    assert report["unclosed_suggestions"]["checked"] == 3  # every suggestion with text, shown or late
    assert report["unclosed_suggestions"]["broken"] == 1 and report["unclosed_suggestions"]["opened_by_suggestion"] == 1
    assert report["cpu_seconds_per_typing_minute"] == 24.0
    assert report["peak_rss_mib"] == {"server": 400, "workers": 120, "worker_processes": 2}
    table = markdown([report]).splitlines()
    assert len(table) == 3 and table[2].startswith("| bm25 | 2 | 5 | 60% | 50% | 250 / 300 / 300 |")


class StatusClient:
    """Answers ``aligncoder.indexStatus`` with the given figures, the last one for ever."""

    def __init__(self, *statuses):
        self.statuses = list(statuses)

    async def workspace_execute_command_async(self, params):
        assert params.command == "aligncoder.indexStatus"
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


async def test_typing_waits_for_the_workspace_to_be_embedded():
    client = StatusClient({"snippets": 0, "embedded": 0}, {"snippets": 9, "embedded": 0},
                          {"snippets": 9, "embedded": 9})
    assert await settle(client, timeout=60, poll=0.01)
    assert client.statuses == [{"snippets": 9, "embedded": 9}]


async def test_embedding_that_makes_no_progress_is_not_waited_for_until_the_timeout():
    started = time.monotonic()
    assert not await settle(StatusClient({"snippets": 9, "embedded": 4}), timeout=60, poll=0.01, stall=0.3)
    assert time.monotonic() - started < 30


def test_repositories_are_folders_or_archives(tmp_path, fixture_workspace):
    archives = tmp_path / "repos"
    archives.mkdir()
    for name in ("b", "a"):
        with tarfile.open(archives / f"{name}.tar.gz", "w:gz") as archive:
            archive.add(fixture_workspace, arcname=name)
    assert repositories([archives, fixture_workspace]) == [archives / "a.tar.gz", archives / "b.tar.gz",
                                                            fixture_workspace]
    with pytest.raises(ValueError, match="missing"):
        repositories([tmp_path / "missing"])


@pytest.mark.parametrize("arguments, message", [
    (["--modes", "bm25,fast"], "unknown mode(s) fast"),
    (["--modes", ","], "unknown mode(s) (none given)"),
    (["--spans", "0"], "at least 1"),
    (["--repos", "no/such/folder"], "not a folder or .tar.gz archive: no/such/folder"),
])
def test_bad_arguments_get_a_clear_error_before_any_server_starts(arguments, message, capsys, tmp_path,
                                                                  fixture_workspace):
    repos = [] if "--repos" in arguments else ["--repos", str(fixture_workspace)]
    code = cli.main(["bench", "typing", *repos, *arguments, "--out", str(tmp_path / "r.json")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
