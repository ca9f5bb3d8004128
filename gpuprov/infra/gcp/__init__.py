"""GCP GPU hosts: the Pulumi component (:mod:`gpuprov.infra.gcp.program`) and Compute Engine helpers (:mod:`gpuprov.infra.gcp.sdk`)."""
