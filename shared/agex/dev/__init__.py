"""The local stack: every emulator and function on loopback, for ``agex dev``, the demo and tests."""
