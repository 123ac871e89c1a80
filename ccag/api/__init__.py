"""HTTP routes: the Anthropic API surface, health, metrics and administration."""
