"""Hostile and odd audio files made on the spot with numpy, PyAV and byte surgery."""
