"""HTTP adapters for the functions: the public API and the step endpoint Cloud Tasks calls."""
