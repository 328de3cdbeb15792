"""The engine: pure decisions over run heads (``decisions``), the conversation rebuilt from events
(``conversation``), the step runner and its lease (``stepper``, ``lease``), and the application services
(``runs``, ``approvals``). It does I/O only through ports."""
