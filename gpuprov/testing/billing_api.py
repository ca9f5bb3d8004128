"""A STAND-IN of the GCP Cloud Billing Catalog API (``GET /v1/services/{service}/skus``), for tests.

It is not Google: it answers the real JSON shape (``skus[]`` with ``description``,
``category.usageType``, ``serviceRegions``, ``pricingInfo[].pricingExpression.tieredRates[].unitPrice``
as ``units`` + ``nanos``; ``nextPageToken`` paging) from a list of SKUs held in memory,
and insists on an API key in the ``X-Goog-Api-Key`` header as Google accepts it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def sku(description: str, usd: float, unit: str = "h", usage: str = "OnDemand",
        regions: tuple[str, ...] = ("us-central1",), group: str = "GPU") -> dict[str, Any]:
    """One SKU in the Billing Catalog's shape."""
    units, nanos = int(usd), round((usd - int(usd)) * 1e9)
    return {
        "name": f"services/6F81-5844-456A/skus/{abs(hash(description + usage)) % 10**12:012d}",
        "skuId": f"{abs(hash(description + usage)) % 0xFFFF:04X}-{abs(hash(usage)) % 0xFFFF:04X}-0000",
        "description": description,
        "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": "Compute", "resourceGroup": group,
                     "usageType": usage},
        "serviceRegions": list(regions),
        "pricingInfo": [{
            "summary": "",
            "pricingExpression": {
                "usageUnit": unit, "displayQuantity": 1, "usageUnitDescription": "hour" if unit == "h" else unit,
                "baseUnit": "s", "baseUnitDescription": "second", "baseUnitConversionFactor": 3600,
                "tieredRates": [{"startUsageAmount": 0,
                                 "unitPrice": {"currencyCode": "USD", "units": str(units), "nanos": nanos}}],
            },
            "currencyConversionRate": 1,
            "effectiveTime": "2026-11-01T00:00:00Z",
        }],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "MULTI_REGIONAL", "regions": list(regions)},
    }


# us-central1 list prices as published for these SKUs (VM parts and GPUs), in the catalog's shape.
DEFAULT_SKUS = [
    sku("N1 Predefined Instance Core running in Americas", 0.031611, group="N1Standard"),
    sku("N1 Predefined Instance Ram running in Americas", 0.004237, unit="GiBy.h", group="N1Standard"),
    sku("Spot Preemptible N1 Predefined Instance Core running in Americas", 0.0067, usage="Preemptible",
        group="N1Standard"),
    sku("Nvidia Tesla T4 GPU running in Americas", 0.35),
    sku("Nvidia Tesla T4 GPU attached to Spot Preemptible VMs running in Americas", 0.14, usage="Preemptible"),
    sku("G2 Instance Core running in Americas", 0.024988, group="G2Standard"),
    sku("G2 Instance Ram running in Americas", 0.002927, unit="GiBy.h", group="G2Standard"),
    sku("Nvidia L4 GPU running in Americas", 0.560040),
]


class BillingCatalogStandIn:
    """Serves ``skus`` over HTTP on loopback, ``page_size`` SKUs a page."""

    def __init__(self, skus: list[dict[str, Any]] | None = None, api_key: str = "billing-test-key", page_size: int = 3):
        self.skus = list(DEFAULT_SKUS if skus is None else skus)
        self.api_key, self.page_size = api_key, page_size
        self.seen: list[dict[str, Any]] = []  # path, query and headers of every request
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> BillingCatalogStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                standin.seen.append({"path": url.path, "query": query, "headers": dict(self.headers)})
                if self.headers.get("X-Goog-Api-Key") != standin.api_key:
                    self._send(403, {"error": {"code": 403, "message": "The request is missing a valid API key.",
                                               "status": "PERMISSION_DENIED"}})
                    return
                if url.path != "/v1/services/6F81-5844-456A/skus":
                    self._send(404, {"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}})
                    return
                start = int(query.get("pageToken") or 0)
                page = standin.skus[start:start + standin.page_size]
                nxt = start + standin.page_size
                self._send(200, {"skus": page, "nextPageToken": str(nxt) if nxt < len(standin.skus) else ""})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
