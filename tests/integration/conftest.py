"""Fixtures shared by the sender's integration tests (the rig in sender_rig.py): a bare moto
server provisioned from template.yaml, a DNS server, a test CA, scriptable MX hosts, a clock."""

from sender_rig import aws_fixture, pki_fixture, rig_fixture, signer_fixture  # noqa: F401 - fixtures
