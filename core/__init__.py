"""The shared core: errors, settings, problem responses and the pure domain.

Every other package of the platform may import from here; nothing here imports any of them
(``docs/architecture.md`` gives the layers and ``./dev test`` enforces them).
"""
