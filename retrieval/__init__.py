"""FAQ sources -> embeddings -> FAISS + BM25 index; search."""
