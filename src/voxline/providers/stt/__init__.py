"""Speech-to-text providers: the protocol in `base`, implementations beside it."""
