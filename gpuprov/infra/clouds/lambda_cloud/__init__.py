"""Lambda Cloud hosts: API client, stand-in API, Pulumi dynamic providers, leak-proof launches."""
