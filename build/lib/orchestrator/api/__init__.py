"""Everything HTTP about the orchestrator, one concern per module:

- `app`: the aiohttp application (middlewares, routes, the OpenAPI document) and its lifecycle;
  `server`: serving it on a port with a graceful shutdown.
- `recordings`, `worker`, `ops`: the handlers, each with its `routing.documented` promise.
- `bodies`: request bodies; `parsing`: reading bodies and query values; `views`: response shapes.
- `responses`: JSON answers and the error-code-to-status table; `middleware`: token check and errors.
- `bearer`: tokens and the realm each path needs; `context`: what handlers may use.
- `openapi`: the document, generated from the registered routes.

Nothing is imported here, so a module can import one of these without pulling in the rest.
"""
