"""What a recording sounds like: decode, front-ends, the CNNs, the vote. No database, no files written."""
