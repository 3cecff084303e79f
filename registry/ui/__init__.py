"""The registry's web UI under ``/ui`` (docs/ui.md): :class:`registry.ui.pages.RegistryUI`."""
