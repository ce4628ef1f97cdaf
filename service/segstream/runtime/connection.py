"""Whether this process can open a connection to the cluster with its security options.

Checked once before the first Kafka client starts, so a certificate that does not verify or a
broker that is not there reads as one line naming the server and the reason; aiokafka itself
says only "Unable to bootstrap", after logging the reason once per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from segstream.runtime.settings import Settings

CONNECT_TIMEOUT_SECONDS = 10.0


async def unreachable(s: Settings) -> str | None:
    """Why no bootstrap server accepts a TCP (and, with SSL, a verified TLS) connection, or
    None when one does. SASL is left to the clients: it needs the Kafka protocol."""
    timeout = CONNECT_TIMEOUT_SECONDS
    context = s.ssl_context() if s.security_protocol.endswith("SSL") else None
    reasons = []
    for server in filter(None, (part.strip() for part in s.bootstrap_servers.split(","))):
        host, _, port = server.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port), ssl=context), timeout
            )
        except ssl.SSLCertVerificationError as exc:
            reasons.append(
                f"{server}: TLS certificate verify failed: {exc.verify_message}"
                " (SEGSTREAM_SSL_CAFILE must name the CA that signed the broker's certificate)"
            )
        except ssl.SSLError as exc:
            reasons.append(f"{server}: TLS handshake failed: {exc.reason or exc}")
        except TimeoutError:
            reasons.append(f"{server}: no answer within {timeout:.0f} s")
        except (OSError, ValueError) as exc:
            reasons.append(f"{server}: {getattr(exc, 'strerror', None) or exc}")
        else:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
            return None
    return f"cannot connect to Kafka ({s.security_protocol}): {'; '.join(reasons)}"
