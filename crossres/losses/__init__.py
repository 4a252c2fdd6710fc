"""Parameter-light loss modules, each tested against a naive reference."""
