"""Fixtures shared by the integration tests: the sender's rig (sender_rig.py: a bare moto server
provisioned from template.yaml, a DNS server, a test CA, scriptable MX hosts, a clock); the MX-host
factory (mx_factory) is in tests/conftest.py, shared with tests/local_stack."""

from sender_rig import aws_fixture, engine_fixture, pki_fixture, rig_fixture, signer_fixture  # noqa: F401 - fixtures
