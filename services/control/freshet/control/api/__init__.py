"""The HTTP API of control: routers, one module per resource, and error handlers."""
