"""Pure Anthropic-protocol code: translation, models, errors, stream observation."""
