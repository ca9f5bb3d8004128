"""An EKS stack under Pulumi's mock runtime: ``up`` declares it, ``down`` asks AWS (moto in server mode, the
AWS API contract on loopback) for the cluster, its node instances and its claims' volumes, and fails while one remains."""

from __future__ import annotations

import boto3

STACK = "k8s-eks2"
CONFIG = "cloud: eks\napps: [vllm_cxr]\nallowed_cidrs: [203.0.113.7/32]\n"




def test_eks_up_then_down_checks_aws_for_what_the_cluster_left(moto_url, gpuprov_cli, monkeypatch):
    env = {"GPUPROV_PULUMI": "mock", "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "GPUPROV_VERIFY_TIMEOUT_S": "1"}
    up = gpuprov_cli("up", "--stack", STACK, config=CONFIG, env=env)
    assert up.returncode == 0, up.stderr
    assert f"eks workloads applied in namespace gpuprov-{STACK}" in up.stdout and "g5.xlarge" in up.stdout

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    node = ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": "eks:cluster-name", "Value": f"gpuprov-{STACK}"}]}])
    node_id = node["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=50, TagSpecifications=[{
        "ResourceType": "volume", "Tags": [{"Key": "kubernetes.io/created-for/pvc/namespace",
                                            "Value": f"gpuprov-{STACK}"}]}])["VolumeId"]

    refused = gpuprov_cli("down", "--stack", STACK, config=CONFIG, env=env)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert f"eks instance {node_id}" in refused.stderr and f"eks volume {volume}" in refused.stderr

    ec2.terminate_instances(InstanceIds=[node_id])
    ec2.delete_volume(VolumeId=volume)
    down = gpuprov_cli("down", "--stack", STACK, config=CONFIG, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"{STACK}: eks stack removed" in down.stdout
