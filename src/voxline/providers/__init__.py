"""Model providers by role (llm, stt, tts, vad): a protocol each, plus implementations."""
