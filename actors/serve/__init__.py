"""Ray Serve shells: the LLM decision deployment, its app builders and its client."""
