"""The path of every track: plan (scan), analyse in isolated workers, record, write."""
