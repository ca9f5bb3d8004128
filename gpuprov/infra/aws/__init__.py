"""AWS GPU hosts: the Pulumi component (:mod:`gpuprov.infra.aws.program`) and boto3 helpers (:mod:`gpuprov.infra.aws.sdk`)."""
