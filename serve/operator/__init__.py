"""The operator API: what people on duty read and do with alerts, as a second Serve application.

It sits beside the prediction application on the same Serve HTTP port, under its own
route prefix (``alerting.operator_route_prefix``, ``/ops`` by default), and reads and
writes the alert store (:mod:`alerting.store`) only through the store's interface:
incidents with their events, evidence, acknowledgements and deliveries; acknowledge and
resolve; silences; the sensors table; the fleet KPIs. It is protected by the same API
keys as the prediction API (``serve.api_keys``) and answers errors in the same shape
(:mod:`serve.errors`).

- :mod:`serve.operator.app`: the Serve deployment and its builders
- :mod:`serve.operator.api`: the FastAPI app around a store
- :mod:`serve.operator.schemas`: request and response bodies (the OpenAPI description)
- :mod:`serve.operator.routes`: one router per concern
- :mod:`serve.operator.deployment`: deploy, inspect and remove it (``smoke up``)
"""
