"""The streams of a service connection's requests: wake word, speech-to-text, text-to-speech (one module each)."""
