"""Hostile and odd audio files made on the spot (numpy, PyAV and byte surgery), for tests and benches."""
