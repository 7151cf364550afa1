"""The platform-free core: types, conversation state, policy, answer backends, pipeline."""
