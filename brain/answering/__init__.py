"""Writing the answer: quote and generative backends, the citation policy, the hf and
openai generators, batching, model loading, the lean CPU engine and the model registry."""
