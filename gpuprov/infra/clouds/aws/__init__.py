"""AWS GPU hosts: the Pulumi component (:mod:`gpuprov.infra.clouds.aws.program`) and boto3 helpers (:mod:`gpuprov.infra.clouds.aws.sdk`)."""
