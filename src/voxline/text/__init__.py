"""Text utilities shared by the voice pipeline and the TTS providers."""

from voxline.text.sentences import SentenceChunker, split_sentences

__all__ = ["SentenceChunker", "split_sentences"]
