"""Ray actors: thin shells around the pure sapphire package."""
