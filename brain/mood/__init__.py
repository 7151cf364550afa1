"""Reading a customer's mood: a trained classifier head over the retrieval embedding
(`classifier`), and the reader the brain asks, which follows the served version and falls
back to the word list when no classifier fits (`reader`)."""
