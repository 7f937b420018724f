"""Request checks applied before any route runs."""
