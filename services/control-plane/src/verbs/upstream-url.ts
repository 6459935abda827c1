import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { isPublicAddress } from "@mcpgw/egress";
import { validation } from "../errors.ts";

/**
 * Rejects upstream URLs that are not plain http(s), carry credentials, or resolve to anything
 * but global unicast addresses (SSRF: private, loopback, NAT64, multicast ... per the IANA
 * special-purpose registries), unless the deployment allows private upstreams. Data planes, the
 * worker and token/JWKS fetches check each connection again (DNS rebinding).
 */
export async function assertSafeUpstreamUrl(raw: string, allowPrivate: boolean): Promise<string> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw validation(`invalid upstream URL: ${JSON.stringify(raw.slice(0, 200))}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw validation("upstream URLs must use http or https");
  if (url.username || url.password)
    throw validation("upstream URLs must not embed credentials; use server credentials");
  if (allowPrivate) return url.toString();
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const addresses = isIP(host)
    ? [host]
    : await lookup(host, { all: true }).then(
        (r) => r.map((a) => a.address),
        () => [],
      );
  if (addresses.length === 0) throw validation(`upstream host ${host} does not resolve`);
  if (!addresses.every(isPublicAddress)) {
    throw validation(
      `upstream host ${host} resolves to a private or special-purpose address; set MCPGW_ALLOW_PRIVATE_UPSTREAMS=true to allow it`,
    );
  }
  return url.toString();
}
