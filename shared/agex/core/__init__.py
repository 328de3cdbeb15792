"""The core: runs, messages, agents, tools as declared, approvals, errors, clock and ids. No I/O, and
nothing else of agex is imported here: every other layer builds on it."""
