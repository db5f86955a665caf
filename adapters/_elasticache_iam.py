"""ElastiCache IAM authentication for redis-py: a SigV4-presigned token as the password."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlunparse

from ..exceptions import ConfigurationError

IAM_TOKEN_LIFETIME = 900.0  # seconds ElastiCache accepts a signed token
IAM_TOKEN_RENEW_AFTER = 600.0  # renew well before it expires


class ElastiCacheIAMProvider:
    """redis-py credential provider for ElastiCache IAM authentication.

    The password is a SigV4-presigned ``connect`` request for the cache, made with botocore's
    signer from the function's own credentials, valid 15 minutes; it is renewed after 10.
    """

    def __init__(
        self,
        *,
        user: str,
        cache_name: str,
        region: str | None = None,
        serverless: bool = False,
        session: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.user = user
        self.cache_name = cache_name
        self.region = region
        self.serverless = serverless
        self._session = session
        self._clock = clock
        self._token: str | None = None
        self._made_at = 0.0
        self._lock = threading.Lock()

    def get_credentials(self) -> tuple[str, str]:
        with self._lock:
            if self._token is None or self._clock() - self._made_at >= IAM_TOKEN_RENEW_AFTER:
                self._token = self._sign()
                self._made_at = self._clock()
            return self.user, self._token

    async def get_credentials_async(self) -> tuple[str, str]:  # redis-py's interface
        return self.get_credentials()

    def _sign(self) -> str:
        import botocore.session
        from botocore.model import ServiceId
        from botocore.signers import RequestSigner

        session = self._session or botocore.session.get_session()
        region = self.region or session.get_config_variable("region")
        if not region:
            raise ConfigurationError(
                "ElastiCache IAM auth needs a region: set ATHENA_WARM_REGION or AWS_REGION"
            )
        credentials = session.get_credentials()
        if credentials is None:
            raise ConfigurationError(
                "ElastiCache IAM auth found no AWS credentials; give the function a role with "
                "elasticache:Connect on the cache and the user"
            )
        query = {"Action": "connect", "User": self.user}
        if self.serverless:
            query["ResourceType"] = "ServerlessCache"
        url = urlunparse(("https", self.cache_name, "/", "", urlencode(query), ""))
        signer = RequestSigner(ServiceId("elasticache"), region, "elasticache", "v4",
                               credentials, session.get_component("event_emitter"))
        signed: str = signer.generate_presigned_url(
            {"method": "GET", "url": url, "body": {}, "headers": {}, "context": {}},
            operation_name="connect", expires_in=int(IAM_TOKEN_LIFETIME), region_name=region,
        )
        return signed.removeprefix("https://")
