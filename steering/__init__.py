"""steering: extract a gyaru (ギャル口調) control vector from a chat LLM and steer chats with it."""

__version__ = "0.1.0"
