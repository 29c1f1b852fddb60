"""Voice activity detection: the protocol in `base`, implementations beside it."""
