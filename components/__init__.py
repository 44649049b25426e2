"""Reusable ComponentResources and the pure functions that plan them."""
