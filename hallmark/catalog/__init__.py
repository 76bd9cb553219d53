"""Image catalog: lifecycle stage, ownership and promotion gates per image (repository + digest)."""
