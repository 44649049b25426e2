"""One module per product: its config model and the function that assembles it."""
