"""Domain-free helpers; nothing here imports from the domains."""
