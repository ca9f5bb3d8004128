"""STAND-INS of what cannot run here, built from the real contracts, for tests and for trying gpuprov with
no cloud account. Nothing in gpuprov's product code imports this package; the command line offers the
Lambda one to users as ``gpuprov sandbox lambda-api``.

- :mod:`gpuprov.testing.lambda_api`: the Lambda Cloud API (its OpenAPI document 1.8.3), stateful, with
  fault injection; its instances can be a local sandbox host, so launch -> SSH -> deploy -> terminate is real.
- :mod:`gpuprov.testing.compute_api`: the Compute Engine REST paths and JSON shapes gpuprov uses.
- :mod:`gpuprov.testing.billing_api`: the Cloud Billing Catalog's SKU listing, with paging.
"""
