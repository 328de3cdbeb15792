"""Version 2 of the sample support agent for the drift story: a behaviour-relevant setting changed."""

from examples.support_agent import build

support_v2 = build("2", goodwill_factor=2.0)
