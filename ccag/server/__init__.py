"""The inbound Trio shell: listeners, HTTP/1.1 (h11) and HTTP/2 (h2) drivers."""
