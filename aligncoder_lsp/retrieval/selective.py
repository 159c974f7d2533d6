"""Selective retrieval (Repoformer): decide per request whether retrieval is worth it.

The generator first completes without repository context; features of that attempt (its
confidence, whether it reaches for names the file has not defined, and whether those names
exist in the repository at all) and of the repository (how much of the code before the
cursor the best match in another file shares) go through a logistic model, calibrated on self-supervised examples from code
(``aligncoder-lsp calibrate``): label = retrieval raised edit similarity. Retrieval runs
when the probability reaches the threshold setting; otherwise the first attempt is the
answer, at the cost of a plain completion.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aligncoder_lsp.data import shipped_folder
from aligncoder_lsp.index.tokenize import code_tokens
from aligncoder_lsp.index.workspace_index import WorkspaceIndex
from aligncoder_lsp.models.embedded import ModelUnavailable
from aligncoder_lsp.models.llama_backend import Generation

DEFAULT_POLICY = shipped_folder("weights") / "selective-policy.json"
FEATURES = ("bias", "mean_logprob", "min_logprob", "first_logprob", "tokens",
            "novel_identifiers", "unknown_identifiers", "repository_overlap")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def selective_features(first: Generation, prefix: str, path: str, index: WorkspaceIndex) -> np.ndarray:
    """Features of a context-free attempt at the completion in the file ``path``."""
    logprobs = first.logprobs or [0.0]
    generated = set(_IDENTIFIER.findall(first.text))
    novel = generated - set(_IDENTIFIER.findall(prefix[-6000:]))
    unknown = [name for name in novel if index.document_frequency(name.lower()) == 0]
    recent = "\n".join(prefix.split("\n")[-5:])
    words = set(code_tokens(recent))
    best = index.search(recent, 1, exclude_path=path)
    overlap = len(words.intersection(code_tokens(best[0][0].text))) / len(words) if best and words else 0.0
    return np.array([
        1.0,
        float(np.mean(logprobs)),
        float(np.min(logprobs)),
        float(logprobs[0]),
        math.log1p(len(first.logprobs)),
        len(novel) / len(generated) if generated else 0.0,
        len(unknown) / len(novel) if novel else 0.0,
        overlap,
    ])


@dataclass
class SelectivePolicy:
    weights: list[float]
    mean: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    scale: list[float] = field(default_factory=lambda: [1.0] * len(FEATURES))
    threshold: float = 0.5
    notes: dict = field(default_factory=dict)

    def probability(self, features: np.ndarray) -> float:
        z = (features - np.array(self.mean)) / np.array(self.scale)
        z[0] = 1.0
        return float(1.0 / (1.0 + np.exp(-float(np.dot(self.weights, z)))))

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, l2: float = 1.0, steps: int = 2000) -> SelectivePolicy:
        """Logistic regression (standardised features, L2-regularised, gradient descent)."""
        mean = features.mean(axis=0)
        scale = features.std(axis=0) + 1e-6
        mean[0], scale[0] = 0.0, 1.0
        x = (features - mean) / scale
        weights = np.zeros(x.shape[1])
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-(x @ weights)))
            gradient = x.T @ (p - labels) / len(labels) + l2 * np.r_[0.0, weights[1:]] / len(labels)
            weights -= 0.5 * gradient
        return cls(weights.tolist(), mean.tolist(), scale.tolist())

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"features": FEATURES, "weights": self.weights, "mean": self.mean,
                                    "scale": self.scale, "threshold": self.threshold, "notes": self.notes},
                                   indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path = "") -> SelectivePolicy:
        path = Path(path).expanduser() if path else DEFAULT_POLICY
        try:
            data = json.loads(path.read_text())
            if tuple(data["features"]) != FEATURES:
                raise ValueError("made for other features")
            return cls(data["weights"], data["mean"], data["scale"], float(data["threshold"]), data.get("notes", {}))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelUnavailable(f"selective-retrieval policy {path} is unusable: {error}") from error
