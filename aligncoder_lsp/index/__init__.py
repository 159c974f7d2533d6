"""The workspace snippet index: chunking, tokenizing, BM25."""
