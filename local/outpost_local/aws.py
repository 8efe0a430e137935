"""The local AWS endpoints: moto for SQS, S3, Secrets Manager and SSM, DynamoDB Local for DynamoDB.

  LocalAws(host).start()   moto's server through moto_server.py (SQS mutations serialised) and,
                           when choose_engine() says so, DynamoDB Local, on `host`
  .env()                   AWS_ENDPOINT_URL (moto) and AWS_ENDPOINT_URL_DYNAMODB (DynamoDB Local;
                           boto3 prefers the per-service variable), credentials, region
  .client(service)         a boto3 client for the right endpoint (what provision() needs)
  .dynamodb_engine         dynamodb_local.ENGINE_LOCAL or ENGINE_MOTO, and why

Used by the embedded local stack and by the test rigs, so both run the same engines.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

from .dynamodb_local import ENGINE_LOCAL, ENGINE_MOTO, DynamoDbLocal, EngineChoice, choose_engine
from .lifecycle import Server, free_port, stop_process, wait_port

log = logging.getLogger("outpost_local")

REGION = "us-east-1"


class LocalAws(Server):
    def __init__(self, host: str, moto_port: int = 0, dynamodb_port: int = 0, *,
                 moto_module: str = "outpost_local.moto_server", dynamodb_local: bool = True) -> None:
        self.host, self.moto_port, self.dynamodb_port = host, moto_port, dynamodb_port
        self.moto_module = moto_module  # "moto.server": stock moto, for comparisons only
        self.want_dynamodb_local = dynamodb_local  # False: moto only (a test of moto itself)
        self.moto: subprocess.Popen | None = None
        self.dynamodb: DynamoDbLocal | None = None
        self.dynamodb_engine = ""
        self.dynamodb_engine_reason = ""

    def _start(self) -> None:
        choice = choose_engine() if self.want_dynamodb_local else EngineChoice(ENGINE_MOTO, "moto only")
        self.dynamodb_engine, self.dynamodb_engine_reason = choice.engine, choice.reason
        self.moto_port = self.moto_port or free_port(self.host)
        self.moto = subprocess.Popen(
            [sys.executable, "-m", self.moto_module, "-H", self.host, "-p", str(self.moto_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if choice.engine == ENGINE_LOCAL:  # the JVM starts while moto does
            self.dynamodb = DynamoDbLocal(self.host, self.dynamodb_port or free_port(self.host)).start()
            self.dynamodb_port = self.dynamodb.port
        wait_port(self.host, self.moto_port, 60, self.moto, what="moto")
        log.info("DynamoDB engine: %s (%s)", self.dynamodb_engine, self.dynamodb_engine_reason)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.moto_port}"

    @property
    def dynamodb_endpoint(self) -> str:
        return self.dynamodb.endpoint if self.dynamodb is not None else self.endpoint

    def env(self) -> dict[str, str]:
        env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
        if self.dynamodb is not None:
            env["AWS_ENDPOINT_URL_DYNAMODB"] = self.dynamodb.endpoint
        return env

    def client(self, service: str) -> Any:
        import boto3

        url = self.dynamodb_endpoint if service == "dynamodb" else self.endpoint
        return boto3.client(service, endpoint_url=url, region_name=REGION,  # type: ignore[call-overload]
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        if self.moto is not None:
            stop_process(self.moto, 10)
            self.moto = None
        if self.dynamodb is not None:
            self.dynamodb.stop()
            self.dynamodb = None

