import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { isPrivateAddress } from "@mcpgw/egress";
import { validation } from "../errors.ts";

/**
 * Rejects upstream URLs that are not plain http(s), carry credentials, or resolve to internal
 * addresses (SSRF), unless the deployment allows private upstreams.
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
  if (addresses.some(isPrivateAddress)) {
    throw validation(
      `upstream host ${host} resolves to a private or internal address; set MCPGW_ALLOW_PRIVATE_UPSTREAMS=true to allow it`,
    );
  }
  return url.toString();
}
