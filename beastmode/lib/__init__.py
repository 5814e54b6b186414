"""Helpers every app uses; imports no app."""
