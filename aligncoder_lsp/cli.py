"""Command line: ``aligncoder-lsp serve | complete | eval | calibrate | train | index | doctor | bench``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

from aligncoder_lsp import __version__
from aligncoder_lsp.config import MODES, Settings, load_user_settings, nested
from aligncoder_lsp.workspace.files import language_of

logger = logging.getLogger("aligncoder_lsp")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aligncoder-lsp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"aligncoder-lsp {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    common.add_argument("--log-file", help="write the log to this file instead of stderr")
    common.add_argument("--model", help="GGUF file of the generator (default: $ALIGNCODER_LSP_MODEL or the "
                        "embedded Gemma-3-270M)")
    common.add_argument("--engine", metavar="URL", help="generate on the OpenAI-compatible inference engine at URL "
                        "(default: $ALIGNCODER_LSP_ENGINE or in-process)")
    common.add_argument("--threads", type=int, help="CPU threads for llama.cpp (default: the cores other processes leave free, at each prompt)")
    common.add_argument("--gpu-layers", type=int, help="layers to offload to the GPU (-1: all)")
    common.add_argument("--cache-dir", help="cache directory (default: $ALIGNCODER_LSP_CACHE or "
                        "~/.cache/aligncoder-lsp)")
    common.add_argument("--config", type=Path, help="JSON settings file (camelCase keys, as initializationOptions), "
                        "read after ~/.config/aligncoder-lsp/config.json")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the language server (stdio)")
    serve.add_argument("--tcp", action="store_true", help="listen on TCP instead of stdio")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=2087)
    serve.set_defaults(run=_serve)

    complete = commands.add_parser("complete", parents=[common], help="complete once at a position and explain")
    complete.add_argument("file", type=Path)
    complete.add_argument("--line", type=int, required=True, help="1-based line")
    complete.add_argument("--col", type=int, required=True, help="1-based column (code points)")
    complete.add_argument("--workspace", type=Path, help="repository root (default: the file's git root or folder)")
    complete.add_argument("--no-retrieval", action="store_true", help="complete without repository context")
    complete.add_argument("--json", action="store_true", help="print the result and trace as JSON")
    complete.set_defaults(run=_complete)

    evaluate = commands.add_parser("eval", parents=[common], help="completion quality on benchmark tasks")
    evaluate.add_argument("--tasks", type=Path, required=True, help="RepoEval-format JSONL")
    evaluate.add_argument("--repos", type=Path, required=True, help="folder of repositories or REPO.tar.gz files")
    evaluate.add_argument("--mode", choices=MODES, default="bm25")
    evaluate.add_argument("--limit", type=int, help="evaluate N tasks (spread over repositories and levels)")
    evaluate.add_argument("--out", type=Path, help="report JSON (default eval-MODE.json); .md and .png beside it")
    evaluate.add_argument("--retriever", help="sentence-transformers folder of the dense retriever")
    evaluate.set_defaults(run=_eval)

    calibrate = commands.add_parser("calibrate", parents=[common], help="learn the selective-retrieval policy")
    calibrate.add_argument("--repos", type=Path, required=True, help="folder of repositories or REPO.tar.gz files")
    calibrate.add_argument("--repo", action="append", help="only these repositories (repeatable)")
    calibrate.add_argument("--per-repo", type=int, default=10, help="masked spans per repository")
    calibrate.add_argument("--exclude-tasks", type=Path, help="JSONL of tasks whose files are never sampled")
    calibrate.add_argument("--max-retrieval", type=float, default=0.5, help="highest retrieval rate to calibrate for")
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--out", type=Path, required=True, help="policy JSON to write")
    calibrate.add_argument("--dump", type=Path, help="also write the collected features and scores")
    calibrate.set_defaults(run=_calibrate)

    train = commands.add_parser("train", help="train the retriever on repositories (phases run separately, resumably)")
    phases = train.add_subparsers(dest="phase", metavar="PHASE", required=True)
    run_options = argparse.ArgumentParser(add_help=False)
    run_options.add_argument("--out", type=Path, default=Path("aligncoder-train"),
                             help="the run's folder (default ./aligncoder-train)")
    corpus = argparse.ArgumentParser(add_help=False)
    corpus.add_argument("--repos", type=Path, nargs="+", metavar="PATH",
                        help="repository folders or tarballs (mine: default the current folder; later phases: "
                             "default the sources in the run's manifest)")
    sharded = argparse.ArgumentParser(add_help=False)
    sharded.add_argument("--shard", default="0/1", help="this machine's share i/n of the holes (default 0/1)")
    sharded.add_argument("--limit", type=int, help="stop after N holes")
    sharded.add_argument("--log-every", type=int, default=10, help="a progress line every N holes")
    mine = phases.add_parser("mine", parents=[common, run_options, corpus], help="cut self-supervised holes")
    mine.add_argument("--holes", type=int, default=500, help="holes over all repositories (default 500)")
    mine.add_argument("--seed", type=int, default=0)
    mine.add_argument("--held-out", type=float, default=0.2, help="share of repositories held out (default 0.2)")
    mine.add_argument("--held-out-repo", action="append", default=[], metavar="NAME",
                      help="hold out this repository (repeatable; instead of a seeded draw)")
    mine.add_argument("--exclude-like", type=Path, nargs="+", default=[], metavar="PATH",
                      help="folders or tarballs (e.g. benchmark snapshots) whose file texts are never targets")
    mine.set_defaults(run=_train_mine)
    candidates = phases.add_parser("candidates", parents=[common, run_options, corpus, sharded],
                                   help="coarse candidates, rendered, and the sampler's drafts for each hole")
    candidates.set_defaults(run=_train_candidates)
    score = phases.add_parser("score", parents=[common, run_options, corpus, sharded],
                              help="reward of each candidate: the generator's log-likelihood of the target")
    score.add_argument("--window-tokens", type=int, default=384,
                       help="tokens of in-file code before the cursor in the scored prompt (default 384)")
    score.set_defaults(run=_train_score)
    fit = phases.add_parser("fit", parents=[common, run_options],
                            help="train the retriever's query tower on the rewards; keep the best held-out pass")
    fit.add_argument("--retriever-out", type=Path, required=True, metavar="FOLDER",
                     help="where to write the trained retriever (a sentence-transformers folder)")
    fit.add_argument("--also", type=Path, nargs="+", default=[], metavar="RUN",
                     help="more run folders whose scored holes join (a repository held out in one is held out in all)")
    fit.add_argument("--loss", choices=("kl", "hard"), default="kl",
                     help="kl: distil the reward distribution (default); hard: cross-entropy on the best candidate")
    fit.add_argument("--epochs", type=int, default=4, help="passes over the training holes (default 4)")
    fit.add_argument("--learning-rate", type=float, default=3e-5)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--log-every", type=int, default=10, help="a progress line every N steps")
    fit.set_defaults(run=_train_fit)
    validate = phases.add_parser("validate", parents=[common, run_options, corpus],
                                 help="held-out holes: target likelihood with each retriever's top snippets, "
                                      "and ranking against the rewards")
    validate.add_argument("--retriever", action="append", default=[], metavar="FOLDER",
                          help="a trained retriever to compare with the embedded one (repeatable)")
    validate.add_argument("--limit", type=int, help="at most N held-out holes")
    validate.add_argument("--log-every", type=int, default=10, help="a progress line every N holes")
    validate.set_defaults(run=_train_validate)
    policy = phases.add_parser("policy", parents=[common, run_options],
                               help="selective-retrieval policy from the rewards (threshold within a retrieval rate)")
    policy.add_argument("--policy-out", type=Path, required=True, metavar="FILE", help="policy JSON to write")
    policy.add_argument("--max-retrieval", type=float, default=0.5,
                        help="highest retrieval rate to choose the threshold for (default 0.5)")
    policy.set_defaults(run=_train_policy)
    status = phases.add_parser("status", parents=[common, run_options], help="progress of a run")
    status.set_defaults(run=_train_report)
    headroom = phases.add_parser("headroom", parents=[common, run_options],
                                 help="per-token log-likelihood of the target: best candidate vs BM25 top-1 vs none")
    headroom.set_defaults(run=_train_report)

    index = commands.add_parser("index", parents=[common], help="build or refresh the index of a workspace")
    index.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="workspace folder(s)")
    index.add_argument("--json", action="store_true", help="print the figures as JSON")
    index.set_defaults(run=_index)

    doctor = commands.add_parser("doctor", parents=[common], help="check versions, models and hardware")
    doctor.set_defaults(run=_doctor)

    bench = commands.add_parser("bench", help="performance figures on real repositories")
    benches = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    server = benches.add_parser("server", parents=[common], help="completion latency and memory of the real server")
    server.add_argument("--tasks", type=Path, required=True, help="RepoEval-format JSONL (positions to complete at)")
    server.add_argument("--repos", type=Path, required=True, help="folder of repositories or REPO.tar.gz files")
    server.add_argument("--repo", required=True, help="repository name, e.g. huggingface_evaluate")
    server.add_argument("--requests", type=int, default=25, help="completion requests to time")
    server.add_argument("--sessions", type=int, default=1, choices=range(1, 33), metavar="N",
                        help="editors at once, each a server of its own (sharing --engine), the requests shared out")
    server.set_defaults(run=_bench_server)
    cancel = benches.add_parser("cancel", parents=[common],
                                help="how soon a llama.cpp engine stops generating after the editor cancels")
    cancel.add_argument("--trials", type=int, default=20, choices=range(1, 1001), metavar="N")
    cancel.set_defaults(run=_bench_cancel)
    index_bench = benches.add_parser("index", parents=[common], help="index build, re-index and embedding figures")
    index_bench.add_argument("path", type=Path, help="a repository folder (copied; the original is not touched)")
    index_bench.add_argument("--samples", type=int, default=40, help="saved files timed until visible")
    index_bench.add_argument("--embed-limit", type=int, default=512, help="snippets embedded per precision")
    index_bench.add_argument("--large-files", type=int, default=0, help="also index a synthetic workspace of N files")
    index_bench.set_defaults(run=_bench_index)
    typing = benches.add_parser("typing", parents=[common], help="a simulated programmer typing against the real server")
    typing.add_argument("--repos", type=Path, nargs="+", required=True, metavar="PATH",
                        help="repositories: folders or REPO.tar.gz (a folder of .tar.gz archives stands for them)")
    typing.add_argument("--modes", default="bm25", help=f"comma-separated retrieval modes ({', '.join(MODES)})")
    typing.add_argument("--spans", type=int, default=20, help="spans typed per mode, spread over the repositories")
    typing.add_argument("--max-lines", type=int, default=15, help="longest span in lines")
    typing.add_argument("--debounce-ms", type=int, default=150, help="idle time before an inline request")
    typing.add_argument("--seed", type=int, default=0, help="seed of span choice and typing pace")
    typing.add_argument("--out", type=Path, default=Path("typing-bench.json"), help="report JSON; .md beside it")
    typing.set_defaults(run=_bench_typing)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    """Warnings and errors only on stderr unless ``-v``: editors show a language server's
    stderr as errors (Neovim's LSP log records each line at ERROR level). A log file and
    training runs also record progress."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(getattr(args, "verbose", 0), logging.DEBUG)
    command = getattr(args, "command", None)
    if command == "train" or (command == "serve" and getattr(args, "log_file", None)):
        level = min(level, logging.INFO)
    handler: logging.Handler
    if getattr(args, "log_file", None):
        handler = logging.FileHandler(args.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("aligncoder_lsp").setLevel(level)
    logging.getLogger("pygls").setLevel(logging.DEBUG if level < logging.INFO else logging.WARNING)


def load_settings(args: argparse.Namespace) -> Settings:
    """The user's own configuration: config files, environment and these options (trusted)."""
    return load_user_settings(args.config, nested({
        "model.generator": args.model, "engine.url": args.engine, "model.nThreads": args.threads,
        "model.nGpuLayers": args.gpu_layers, "cacheDir": args.cache_dir}))


def _serve(args: argparse.Namespace) -> int:
    from aligncoder_lsp.server import transport
    from aligncoder_lsp.server.features import build_server

    server = build_server(load_settings(args))
    try:
        if args.tcp:
            exit_code = transport.serve_tcp(server, args.host, args.port)
        else:
            # stdout carries the protocol: give it a private descriptor and point fd 1 at
            # stderr, so nothing a library prints can corrupt the stream.
            protocol_out = os.fdopen(os.dup(1), "wb")
            os.dup2(2, 1)
            sys.stdout = sys.stderr
            exit_code = transport.serve_stdio(server, sys.stdin.buffer, protocol_out)
    finally:
        server.close()
    logger.info("server stopped (exit code %d)", exit_code)
    transport.end_process(exit_code)  # everything is saved


def _complete(args: argparse.Namespace) -> int:
    from aligncoder_lsp.index.workspace_index import WorkspaceIndex
    from aligncoder_lsp.pipeline import CompletionEngine, CompletionRequest, ModelUnavailable

    settings = load_settings(args)
    settings.retrieval.enabled = not args.no_retrieval
    path = args.file.resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"error: cannot read {args.file}: {error}", file=sys.stderr)
        return 2
    root = (args.workspace or _git_root(path) or path.parent).resolve()
    index = WorkspaceIndex(settings.index, WorkspaceIndex.cache_file_for(settings.resolved_cache_dir(), [root]))
    stats = index.build([root]) if settings.retrieval.enabled else None
    engine = CompletionEngine(settings, index)
    request = CompletionRequest(str(path), text.replace("\r\n", "\n"), args.line - 1, args.col - 1,
                                language_of(path) or "python")
    try:
        result = engine.complete(request, threading.Event())
    except ModelUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    trace = result.trace
    if args.json:
        print(json.dumps({"completion": result.text, "trace": trace.to_json(),
                          "index": stats and {"files": stats.files, "snippets": stats.snippets,
                                              "seconds": round(stats.seconds, 3)}}, indent=2))
        return 0
    print(result.text)
    print("\n--- trace", file=sys.stderr)
    if stats:
        print(f"index: {stats.files} files, {stats.snippets} snippets in {stats.seconds:.2f} s", file=sys.stderr)
    print(f"mode: {trace.mode}, shape: {trace.shape}, model: {trace.model} ({trace.prompt_format})", file=sys.stderr)
    for use in trace.file_context + trace.snippets:
        print(f"snippet: {use.describe()}", file=sys.stderr)
    print(f"tokens: prompt {trace.prompt_tokens} (reused {trace.reused_tokens}), generated "
          f"{trace.generated_tokens}, stopped by {trace.stopped_by}", file=sys.stderr)
    print("timings (ms): " + ", ".join(f"{k} {v:g}" for k, v in trace.timings_ms.items()), file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from aligncoder_lsp.evaluation import runner

    settings = load_settings(args)
    if args.retriever:
        settings.retriever.model = args.retriever
    return runner.main(args, settings)


def _calibrate(args: argparse.Namespace) -> int:
    from aligncoder_lsp.evaluation import calibrate

    return calibrate.main(args, load_settings(args))


def _train_mine(args: argparse.Namespace) -> int:
    from aligncoder_lsp.pipeline import ModelUnavailable, load_generator
    from aligncoder_lsp.training.corpus import Repository, unique_names
    from aligncoder_lsp.training.mine import MineSettings, run_mine
    from aligncoder_lsp.training.store import Run, RunError

    settings = load_settings(args)
    try:
        repositories = unique_names([Repository.from_path(p) for p in args.repos or [Path.cwd()]])
        exclude_like = [Repository.from_path(p) for p in args.exclude_like]
        model = load_generator(settings)  # targets are measured in its tokens
        summary = run_mine(Run(args.out), repositories, settings,
                           MineSettings(args.holes, args.seed, args.held_out, args.held_out_repo),
                           model.count_tokens, exclude_like, model.path.name)
    except (RunError, ModelUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


def _train_phase(args: argparse.Namespace, phase, report_only: bool = False) -> int:
    """Run a phase over the run's repositories; print the run's status after it, or the
    phase's own report."""
    from aligncoder_lsp.pipeline import ModelUnavailable
    from aligncoder_lsp.training.corpus import Repository, unique_names
    from aligncoder_lsp.training.store import Run, RunError, Shard

    run = Run(args.out)
    try:
        shard = Shard.parse(getattr(args, "shard", "0/1"))
        sources = args.repos or [Path(entry["source"]) for entry in run.manifest()["repositories"]]
        repositories = {repository.name: repository for repository in
                        unique_names([Repository.from_path(p) for p in sources])}
        done = phase(run, repositories, load_settings(args), shard)
    except (RunError, ModelUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(done if report_only else {"holes_done_now": done, **run.status()}, indent=2))
    return 0


def _train_candidates(args: argparse.Namespace) -> int:
    from aligncoder_lsp.training.candidates import run_candidates

    return _train_phase(args, lambda run, repositories, settings, shard: run_candidates(
        run, repositories, settings, shard, args.limit, args.log_every))


def _train_score(args: argparse.Namespace) -> int:
    from aligncoder_lsp.pipeline import load_scorer
    from aligncoder_lsp.training.score import run_score

    def score(run, repositories, settings, shard) -> int:
        scorer = load_scorer(settings)
        try:
            return run_score(run, repositories, settings, scorer, shard, args.window_tokens, args.limit,
                             args.log_every)
        finally:
            scorer.close()

    return _train_phase(args, score)


def _train_fit(args: argparse.Namespace) -> int:
    from aligncoder_lsp.models.embedded import ModelUnavailable, embedded_retriever
    from aligncoder_lsp.training.fit import FitSettings, run_fit
    from aligncoder_lsp.training.store import Run, RunError

    settings = load_settings(args)
    fit = FitSettings(loss=args.loss, epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed,
                      lexical_weight=settings.retrieval.lexical_weight)
    try:
        base = Path(settings.retriever.model).expanduser() if settings.retriever.model else embedded_retriever()
        report = run_fit([Run(args.out), *map(Run, args.also)], base, args.retriever_out, fit, args.log_every)
    except (RunError, ModelUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


def _train_validate(args: argparse.Namespace) -> int:
    from aligncoder_lsp.pipeline import load_generator
    from aligncoder_lsp.training.validate import run_validate

    def validate(run, repositories, settings, shard) -> dict:
        retrievers = {"untrained": "", **{str(folder): str(folder) for folder in args.retriever}}
        window = run.manifest().get("settings", {}).get("score", {}).get("window_tokens", 384)
        return run_validate(run, repositories, settings, load_generator(settings), retrievers, window,
                            args.limit, args.log_every)

    return _train_phase(args, validate, report_only=True)


def _train_policy(args: argparse.Namespace) -> int:
    from aligncoder_lsp.training.policy import run_policy
    from aligncoder_lsp.training.store import Run, RunError

    try:
        notes = run_policy(Run(args.out), args.policy_out, load_settings(args).retrieval.top_k, args.max_retrieval)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(notes, indent=2))
    return 0


def _train_report(args: argparse.Namespace) -> int:
    """``train status`` or ``train headroom``: a JSON report of the run."""
    from aligncoder_lsp.training.headroom import headroom
    from aligncoder_lsp.training.store import Run, RunError

    try:
        run = Run(args.out)
        print(json.dumps(run.status() if args.phase == "status" else headroom(run), indent=2))
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _index(args: argparse.Namespace) -> int:
    from aligncoder_lsp.index.workspace_index import WorkspaceIndex

    settings = load_settings(args)
    roots = [path.resolve() for path in args.paths]
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    index = WorkspaceIndex(settings.index, WorkspaceIndex.cache_file_for(settings.resolved_cache_dir(), roots))
    stats = index.build(roots)
    report = {
        "files": stats.files,
        "snippets": stats.snippets,
        "dependency_definitions": stats.dependency_definitions,
        "reindexed_files": stats.reindexed,
        "removed_files": stats.removed,
        "skipped": dict(stats.skipped),
        "from_cache": stats.loaded_from_cache,
        "seconds": {phase: round(seconds, 3) for phase, seconds in stats.phases.items()},
        "total_seconds": round(stats.seconds, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cache": str(index.cache_file),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['files']} files, {report['snippets']} snippets, {report['dependency_definitions']} "
          f"dependency definitions ({report['reindexed_files']} files (re)indexed, {report['removed_files']} removed"
          f"{', from cache' if stats.loaded_from_cache else ''})")
    skipped = ", ".join(f"{count} {reason}" for reason, count in stats.skipped.items()) or "none"
    print(f"skipped: {skipped}")
    print("seconds: " + ", ".join(f"{phase} {seconds:.3f}" for phase, seconds in report["seconds"].items())
          + f"; total {stats.seconds:.2f}")
    print(f"peak memory: {report['peak_rss_mib']} MiB; cache: {index.cache_file}")
    return 0


def _bench_server(args: argparse.Namespace) -> int:
    from aligncoder_lsp.evaluation import server_bench

    return server_bench.main(args)


def _bench_cancel(args: argparse.Namespace) -> int:
    from aligncoder_lsp.evaluation import server_bench

    return server_bench.main_cancel(args)


def _bench_index(args: argparse.Namespace) -> int:
    from aligncoder_lsp.evaluation import index_bench

    return index_bench.main(args)


def _bench_typing(args: argparse.Namespace) -> int:
    from aligncoder_lsp.evaluation import typing_bench

    return typing_bench.main(args, load_settings(args))


def _git_root(path: Path) -> Path | None:
    for parent in path.parents:
        if (parent / ".git").exists():
            return parent
    return None


def _free_cores_now() -> int:
    from aligncoder_lsp.models.cores import SAMPLE_SECONDS, CoreMeter

    meter = CoreMeter()
    time.sleep(SAMPLE_SECONDS * 1.5)
    return meter.threads()


def _doctor(args: argparse.Namespace) -> int:
    from aligncoder_lsp.models.embedded import ModelUnavailable, embedded_retriever

    settings = load_settings(args)
    ok = True
    print(f"aligncoder-lsp {__version__}, Python {platform.python_version()} on {platform.platform()}")
    for package in ("llama-cpp-python", "pygls", "lsprotocol", "sentence-transformers", "torch",
                    "tree-sitter", "tree-sitter-python", "tree-sitter-java", "rank-bm25", "watchdog", "httpx"):
        try:
            print(f"  {package:24} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            print(f"  {package:24} MISSING")
            ok = False
    print("models:")
    try:
        print(f"  generator  {_check_generator(settings)}")
    except ModelUnavailable as error:
        print(f"  generator  UNAVAILABLE: {error}")
        ok = False
    try:
        print(f"  retriever  {embedded_retriever()}")
    except ModelUnavailable as error:
        print(f"  retriever  UNAVAILABLE: {error}")
        ok = False
    if settings.engine.url:
        print("engine:")
        try:
            for line in _check_engine(settings):
                print(f"  {line}")
        except ModelUnavailable as error:
            print(f"  UNAVAILABLE: {error}")
            ok = False
    print("hardware:")
    from aligncoder_lsp.models.cores import usable_cores

    threads = settings.model.n_threads or f"auto (the free cores at each prompt; {_free_cores_now()} now)"
    print(f"  cpu cores  {usable_cores()} usable, llama.cpp threads {threads}")
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    print(f"  memory     {pages / 2**30:.1f} GiB")
    try:
        import llama_cpp

        offload = bool(llama_cpp.llama_supports_gpu_offload())
        print(f"  gpu offload {'available' if offload else 'not available (CPU build of llama-cpp-python)'}")
    except Exception as error:  # a broken llama.cpp build must still let doctor report
        print(f"  llama.cpp  UNAVAILABLE: {error}")
        ok = False
    print(f"  nvidia gpu {_nvidia_gpus() or 'none found'}")
    print(f"peak memory of this check: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print("status: ok" if ok else "status: PROBLEMS FOUND")
    return 0 if ok else 1


def _check_generator(settings: Settings) -> str:
    """The generator as the server would load it: the file's layout checked (a truncated or
    corrupt GGUF gets its own message), then loaded by llama.cpp (which knows the architecture)."""
    from aligncoder_lsp.models.embedded import embedded_generator, inspect_gguf
    from aligncoder_lsp.models.llama_backend import LlamaModel

    started = time.perf_counter()
    model = settings.model.generator
    path = Path(model).expanduser() if model else embedded_generator(settings.resolved_cache_dir())
    layout = inspect_gguf(path)
    checked = time.perf_counter() - started
    loaded = LlamaModel(path, 256, settings.model.n_threads, settings.model.n_gpu_layers)
    return (f"{path} ({layout.file_bytes / 2**20:.0f} MiB, GGUF v{layout.version}, {layout.tensors} tensors; "
            f"checked in {checked:.2f} s, loaded by llama.cpp in {loaded.load_seconds:.2f} s)")


def _check_engine(settings: Settings) -> list[str]:
    """The engine as completions would use it: reachable, what it serves, how prompts are
    budgeted, and the latency of one short greedy completion."""
    from aligncoder_lsp.pipeline import connect_engine

    engine = connect_engine(settings)
    try:
        started = time.perf_counter()
        models = engine.models()
        listed = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        generation = engine.generate("def add(a, b):\n", 8, threading.Event())
        completed = (time.perf_counter() - started) * 1000
    finally:
        engine.close()
    return [f"url        {engine.url} (reachable, model list in {listed:.0f} ms)",
            f"models     {', '.join(models) or 'none listed'}; asking for {settings.engine.model or 'its default'}",
            f"tokens     {engine.token_counting}",
            f"kind       {'llama.cpp server (prompt cache kept)' if engine.llama_cpp else 'OpenAI-compatible'}; "
            f"{f'fill-in-the-middle: {engine.fim.family}' if engine.fim else 'left to right'}",
            f"completion {generation.generated_tokens} tokens in {completed:.0f} ms "
            f"(first after {generation.prompt_ms:.0f} ms): {generation.text!r}"]


def _nvidia_gpus() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return "; ".join(out.stdout.split("\n")).strip("; ") if out.returncode == 0 else ""
