"""HTTP handlers of the functions: the public API, the step endpoint Cloud Tasks calls, and the approvals
push endpoint; with the request rules and limits in front of them."""
