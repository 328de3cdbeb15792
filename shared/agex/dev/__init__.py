"""Development only: the local stack, the embedded mode, the demo, and our emulators (Cloud Tasks, Secret
Manager, Gemini) with the launcher of the SDK's. The runtime path never imports this package."""
