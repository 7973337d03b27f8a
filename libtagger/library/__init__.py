"""The user's library: the database, the tags in the files and every safe way of changing them."""
