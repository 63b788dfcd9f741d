"""Runnable example apps; each is exercised by the tests."""
