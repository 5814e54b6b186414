"""Semantic matching: embed a conversation, find similar cached ones, refuse near misses."""
