"""LLM providers: the protocol in `base`, one module per vendor, chosen by a spec string."""
