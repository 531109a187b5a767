"""Test doubles and servers that ship with Baton, for its own tests and for users' tests."""
