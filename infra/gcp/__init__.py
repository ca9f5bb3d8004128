"""GCP GPU hosts: the Pulumi component (:mod:`infra.gcp.program`) and Compute Engine helpers (:mod:`infra.gcp.sdk`)."""
