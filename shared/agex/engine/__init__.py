"""The step engine: pure decisions over run heads (``decisions``), the conversation rebuilt from events
(``conversation``), and the step runner that drives one step over the ports (``stepper``)."""
