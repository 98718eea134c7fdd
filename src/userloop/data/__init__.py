"""Reading real chat logs into conversations, and preparing them (filters, dedupe, splits)."""
