"""Who may use the gateway: API keys (checked in memory) and admin sessions."""
