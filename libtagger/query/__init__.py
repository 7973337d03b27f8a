"""Answers about the library: the query language, listings, statistics."""
