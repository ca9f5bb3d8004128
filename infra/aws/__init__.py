"""AWS GPU hosts: the Pulumi component (:mod:`infra.aws.program`) and boto3 helpers (:mod:`infra.aws.sdk`)."""
