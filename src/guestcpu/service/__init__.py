"""The HTTP service: the fleet's functions over HTTP (FastAPI), and a typed client for it.

``app`` builds the ASGI application (every route calls the same ``guestcpu.fleet.api``
function as the CLI command of the same name and returns its ``to_json()``), ``auth``
reads the token and decides what may be bound, ``client`` is what management
software (and the tests) call it with.
"""
