"""Kubernetes targets: an existing cluster, EKS and GKE (see driver.py)."""
