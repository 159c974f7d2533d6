"""Training the AlignRetriever on self-supervised holes: mine, candidates, score (fit and validate follow)."""
