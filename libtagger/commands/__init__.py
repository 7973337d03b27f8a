"""The ``libtagger`` commands by theme; ``libtagger.cli`` registers them on its group."""
