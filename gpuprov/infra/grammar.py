"""The real grammars of the values a stack config names: image references, Hugging Face model ids,
git commits and repository URLs, host names. Each is matched against the whole string
(:func:`re.fullmatch`, ASCII only), so no trailing newline or other text rides along.

Config values end up in shell scripts, Compose ``.env`` files and command lines on the host; a
value that matches one of these grammars holds no character any of those would read as syntax
(no whitespace, quote, ``$``, ``;``, backslash, ``#``), and none can start with ``-``.
"""

from __future__ import annotations

import re
import unicodedata

# OCI image references, as distribution/reference defines them (reference/regexp.go, grammar in
# reference/reference.go): [domain[:port]/]path-component[/path-component...][:tag][@digest].
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|[-]+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)
IMAGE_NAME_MAX = 255  # distribution/reference: NameTotalLengthMax
# Where images go: a registry domain[:port] and optional path (ECR, us-docker.pkg.dev/PROJECT/REPO, ghcr.io/ORG).
IMAGE_REGISTRY = re.compile(rf"{_DOMAIN}(?:/{_PATH_COMPONENT})*", re.ASCII)

# Hugging Face repository ids, required here as owner/name (huggingface_hub's validate_repo_id:
# word characters, '-' and '.', starting and ending with a word character, no '--' or '..', name
# at most 96 characters, not ending in '.git').
_HF_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
HF_MODEL_ID = re.compile(rf"{_HF_PART}/{_HF_PART}", re.ASCII)

GIT_COMMIT = re.compile(r"[0-9a-f]{40}", re.ASCII)  # a full SHA-1 commit id: never a branch, never an option

# An https:// repository URL: a host name, an optional port and plain path segments; no user info
# (credentials in a URL would land in state and in `ps`), no query, no fragment. A file:/// URL of
# an absolute path is the offline form (a clone on the machine that builds: tests, air-gapped hosts).
_PATH = r"(?:/[A-Za-z0-9._~%+-]+)+/?"
REPOSITORY_URL = re.compile(rf"(?:https://{_DOMAIN_NAME}(?::[0-9]{{1,5}})?|file://){_PATH}", re.ASCII)

# A DNS name or IPv4 address (RFC 1123 labels), or an IPv6 address in brackets.
HOST_ADDRESS = rf"(?:{_DOMAIN_NAME}|\[[0-9a-fA-F:.]+\])"

# Cloud names of things (regions, zones, instance types): lower-case words with '-', '_' and '.'.
CLOUD_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?", re.ASCII)

# Who owns a stack (a user name): what AWS tag values and a login name both allow.
OWNER = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.@+-]{0,62}[A-Za-z0-9_])?", re.ASCII)

# A model name vLLM answers to (--served-model-name) and clients send back.
SERVED_MODEL_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:/-]{0,126}[A-Za-z0-9])?", re.ASCII)

# An SSH host public key as OpenSSH writes it (known_hosts, *.pub): its type and base64, no comment.
SSH_HOST_KEY = re.compile(r"(?:ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) [A-Za-z0-9+/]{16,8192}={0,3}",
                          re.ASCII)
# An SSH host key fingerprint as `ssh-keygen -lf` prints it: SHA256 and 43 characters of unpadded base64.
SSH_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}", re.ASCII)

# A Hugging Face access token (hf_... today; older ones api_...): letters, digits, '_' and '-'.
HF_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,256}", re.ASCII)


def is_image_reference(value: str) -> bool:
    """Whether ``value`` is an OCI image reference (distribution/reference's grammar and name length)."""
    m = IMAGE_REFERENCE.fullmatch(value)
    return m is not None and len(m["name"]) <= IMAGE_NAME_MAX


def is_hf_model_id(value: str) -> bool:
    """Whether ``value`` is a Hugging Face ``owner/name`` id, as huggingface_hub validates one."""
    return (HF_MODEL_ID.fullmatch(value) is not None and "--" not in value and ".." not in value
            and len(value.split("/")[1]) <= 96 and not value.endswith(".git"))


def control_character(value: str) -> str | None:
    """The first control or format character in ``value`` (newline, escape, NUL, a bidi override...)."""
    return next((c for c in value if unicodedata.category(c) in ("Cc", "Cf")), None)
