"""Text-to-speech providers: the protocol in `base`, implementations beside it."""
