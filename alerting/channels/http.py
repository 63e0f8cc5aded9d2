"""One HTTP POST to a receiver, with its failure sorted into retryable or not (stdlib, no client pool)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping

from alerting.channels import DeliveryError, http_error_retryable


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST ``body``; the status of a 2xx answer, else :class:`DeliveryError` naming the cause."""
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as err:
        text = err.read(200).decode("utf-8", "replace").strip()
        raise DeliveryError(f"HTTP {err.code} from {url}: {text}", retryable=http_error_retryable(err.code)) from None
    except urllib.error.URLError as err:
        raise DeliveryError(f"cannot reach {url}: {err.reason}") from None
    except TimeoutError:
        raise DeliveryError(f"no answer from {url} within {timeout_s:g} s") from None
    except (http.client.HTTPException, OSError) as err:
        raise DeliveryError(f"connection to {url} failed: {err!r}") from None
