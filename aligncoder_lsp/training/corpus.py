"""The repositories a run trains on: folders or tarballs, their source files, versions
and licences. Repositories are read in place (tarballs are unpacked into a temporary
folder); the corpus is never copied into the run, only its manifest."""

from __future__ import annotations

import contextlib
import email.parser
import logging
import re
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aligncoder_lsp.config import IndexSettings
from aligncoder_lsp.training.store import Hole, RunError, file_digest, group_by_file
from aligncoder_lsp.workspace.files import Skip, SourceFile, discover, read_source

logger = logging.getLogger(__name__)

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")

VENDORED = ["_vendor/", "vendor/", "vendored/", "third_party/", "thirdparty/", "externals/", "extern/"]
"""Folders of code copied from other projects: never mined, never indexed."""

LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING", "COPYING.txt", "LICENSE.rst")


@dataclass(frozen=True)
class Repository:
    name: str
    source: Path
    """A folder or a tarball."""

    @classmethod
    def from_path(cls, path: Path) -> Repository:
        path = path.expanduser().resolve()
        if path.is_dir():
            return cls(path.name, path)
        for suffix in TARBALL_SUFFIXES:
            if path.name.endswith(suffix) and path.is_file():
                return cls(path.name[: -len(suffix)], path)
        raise RunError(f"{path} is neither a folder nor a tarball ({', '.join(TARBALL_SUFFIXES)})")

    @contextlib.contextmanager
    def open(self) -> Iterator[Path]:
        """The repository's root folder while the context lasts."""
        if self.source.is_dir():
            yield self.source
            return
        with tempfile.TemporaryDirectory(prefix=f"aligncoder-train-{self.name}-") as workdir:
            try:
                with tarfile.open(self.source) as archive:
                    archive.extractall(workdir, filter="data")
            except (OSError, tarfile.TarError) as error:
                raise RunError(f"cannot unpack {self.source}: {error}") from error
            entries = list(Path(workdir).iterdir())
            yield entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(workdir)


def unique_names(repositories: list[Repository]) -> list[Repository]:
    """Repositories whose names are made unique (``name``, ``name-2``...) in a stable order."""
    seen: dict[str, int] = {}
    out = []
    for repository in repositories:
        count = seen[repository.name] = seen.get(repository.name, 0) + 1
        out.append(repository if count == 1 else Repository(f"{repository.name}-{count}", repository.source))
    return out


def index_settings(settings: IndexSettings, exclude: list[str]) -> IndexSettings:
    """The index settings of a run: the user's, with the run's exclusions added."""
    return IndexSettings(settings.block_lines, settings.max_file_bytes, list(settings.include),
                         list(settings.exclude) + [p for p in exclude if p not in settings.exclude])


def source_files(root: Path, settings: IndexSettings) -> Iterator[tuple[str, SourceFile]]:
    """(relative path, file) of every source file the index would see."""
    for path in discover(root, settings.include, settings.exclude):
        source = read_source(path, settings.max_file_bytes)
        if isinstance(source, Skip):
            logger.info("skipping %s: %s", path, source.value)
            continue
        yield path.relative_to(root).as_posix(), source


def files_with_holes(holes: list[Hole], repositories: dict[str, Repository], manifest: dict,
                     settings: IndexSettings, phase: str) -> Iterator[tuple[Path, str, SourceFile, list[Hole]]]:
    """(repository root, relative path, file, its holes in text order) for each file with
    holes, read in place and checked against the manifest: a file changed since mining, or
    a repository not given, is skipped with a log line. The root stays valid until the next
    file of another repository is asked for."""
    digests = {entry["name"]: entry["files"] for entry in manifest["repositories"]}
    for repo, files in group_by_file(holes).items():
        repository = repositories.get(repo)
        if repository is None:
            logger.warning("%s: repository %s is not among --repos; skipping its %d files", phase, repo, len(files))
            continue
        with repository.open() as root:
            for relative, file_holes in files.items():
                source = read_source(root / relative, settings.max_file_bytes)
                if isinstance(source, Skip) or text_digest(source.text) != digests.get(repo, {}).get(relative):
                    logger.warning("%s: %s/%s changed since mining; skipping its %d holes",
                                   phase, repo, relative, len(file_holes))
                    continue
                yield root, relative, source, file_holes


def text_digest(text: str) -> str:
    return file_digest(text.encode("utf-8"))


def describe(repository: Repository, root: Path) -> dict:
    """Version and licence where known (a package's ``*.dist-info/METADATA`` beside it, an
    sdist's ``PKG-INFO``, a licence file)."""
    version = licence = ""
    metadata = _metadata_file(repository, root)
    if metadata is not None:
        try:
            message = email.parser.Parser().parsestr(metadata.read_text(encoding="utf-8", errors="replace"),
                                                     headersonly=True)
        except OSError:
            message = None
        if message is not None:
            version = message.get("Version", "") or ""
            licence = _licence_of(message)
    if not licence:
        licence = _licence_file_title(root)
    return {"name": repository.name, "source": str(repository.source), "version": version, "licence": licence}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata_file(repository: Repository, root: Path) -> Path | None:
    if (root / "PKG-INFO").is_file():
        return root / "PKG-INFO"
    if not repository.source.is_dir():
        return None
    wanted = _normalized(repository.name.removesuffix(".py"))
    infos = sorted(repository.source.parent.glob("*.dist-info"))
    for info in infos:  # the distribution named like the package
        if _normalized(info.name.split("-", 1)[0]) == wanted and (info / "METADATA").is_file():
            return info / "METADATA"
    for info in infos:  # a distribution whose top-level names or files hold the package
        try:
            top_level = (info / "top_level.txt").read_text(encoding="utf-8").split() \
                if (info / "top_level.txt").is_file() else []
            if repository.name in top_level or any(
                    line.startswith((f"{repository.name}/", f"{repository.name},"))
                    for line in (info / "RECORD").read_text(encoding="utf-8").splitlines()):
                return info / "METADATA"
        except OSError:
            continue
    return None


def _licence_of(message) -> str:
    expression = (message.get("License-Expression") or "").strip()
    if expression:
        return expression
    declared = (message.get("License") or "").strip()
    if declared and "\n" not in declared and len(declared) <= 80:
        return declared
    classifiers = [c.split("::")[-1].strip() for c in message.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return "; ".join(classifiers) or (declared.split("\n")[0][:80] if declared else "")


def _licence_file_title(root: Path) -> str:
    for name in LICENCE_FILES:
        path = root / name
        if path.is_file():
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            first = next((line.strip() for line in lines if line.strip()), "")
            return f"{name}: {first[:80]}"
    return ""
