"""ccag: the Anthropic Messages API, served from Claude models on Amazon Bedrock."""

__version__ = "0.1.0"
