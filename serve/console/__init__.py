"""The operator console: one static page (HTML, CSS, plain JavaScript; no build step, nothing from a CDN)
that people on duty keep open. It uses the operator API only (:mod:`serve.operator`), with the same
API keys, and is served by its own small Serve application at ``alerting.console_route_prefix``.

- :mod:`serve.console.app`: the Serve deployment serving the page and its settings
- :mod:`serve.console.deployment`: deploy it (``smoke up``)
- ``serve/console/static/``: the page (package data)
"""
