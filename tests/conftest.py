"""Shared pytest configuration. Broker and worker fixtures live in tests/integration/."""
