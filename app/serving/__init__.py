"""Request logic between the HTTP routes and the engine: validate, assemble, generate, shape."""
