"""The browser console (docs/console.md): served by the api function under ``/console``."""
