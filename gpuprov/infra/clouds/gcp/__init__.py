"""GCP GPU hosts: the Pulumi component (:mod:`gpuprov.infra.clouds.gcp.program`) and Compute Engine helpers (:mod:`gpuprov.infra.clouds.gcp.sdk`)."""
