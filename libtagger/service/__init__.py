"""``libtagger watch``: file events, the job queue, the worker pool, systemd."""
