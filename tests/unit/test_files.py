import os

from aligncoder_lsp.workspace.files import Skip, discover, read_source


def test_reader_guards(tmp_path):
    (tmp_path / "ok.py").write_text("x = 1\r\n")
    (tmp_path / "big.py").write_text("x" * 100)
    (tmp_path / "bin.py").write_bytes(b"\x00\x01binary")
    (tmp_path / "latin.py").write_bytes("caf\xe9".encode("latin-1"))
    assert read_source(tmp_path / "ok.py", 50).text == "x = 1\n"
    assert read_source(tmp_path / "big.py", 50) is Skip.TOO_LARGE
    assert read_source(tmp_path / "bin.py", 50) is Skip.BINARY
    assert read_source(tmp_path / "latin.py", 50) is Skip.UNDECODABLE
    assert read_source(tmp_path / "gone.py", 50) is Skip.VANISHED


def test_discovery_honours_gitignore_and_never_follows_dir_links(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("a = 1")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("b = 1")
    (tmp_path / "pkg" / "sub" / "gen.py").write_text("g = 1")
    (tmp_path / "pkg" / "sub" / ".gitignore").write_text("gen.py\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "c.py").write_text("c = 1")
    (tmp_path / ".gitignore").write_text("build/\n")
    (tmp_path / "Main.java").write_text("class Main {}")
    (tmp_path / "notes.txt").write_text("not code")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x.py").write_text("x = 1")
    os.symlink(tmp_path, tmp_path / "pkg" / "loop")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text("o = 1")
    os.symlink(outside, tmp_path / "escape.py")
    found = sorted(p.relative_to(tmp_path).as_posix() for p in discover(tmp_path))
    assert found == ["Main.java", "pkg/a.py", "pkg/sub/b.py"]
    forced = sorted(p.relative_to(tmp_path).as_posix() for p in discover(tmp_path, include=["build/"]))
    assert "build/c.py" in forced
