"""The outbound Trio shell: Bedrock facts, signing, credentials, pool, client."""
