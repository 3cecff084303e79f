"""The pure domain: definitions, validation, diffs, expressions, contracts, the key layout and
the registry's events.  No I/O happens here."""
