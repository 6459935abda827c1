import { describe, expect, it } from "vitest";
import { endpointOrder, isConnectFailure, pickEndpoint } from "./endpoints.ts";

const weighted = (...weights: number[]) => weights.map((weight, i) => ({ url: `http://e${i}`, weight }));

/** A `random` that returns these values in turn. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

describe("pickEndpoint", () => {
  it("picks the only endpoint without drawing", () => {
    expect(pickEndpoint(weighted(5), () => Number.NaN)).toBe(0);
    expect(pickEndpoint([], () => Number.NaN)).toBe(0);
  });

  it("maps the draw onto the endpoints in proportion to their weights", () => {
    const endpoints = weighted(1, 3); // total 4: [0, 1) → 0, [1, 4) → 1
    expect(pickEndpoint(endpoints, () => 0)).toBe(0);
    expect(pickEndpoint(endpoints, () => 0.24)).toBe(0);
    expect(pickEndpoint(endpoints, () => 0.25)).toBe(1);
    expect(pickEndpoint(endpoints, () => 0.99)).toBe(1);
  });

  it("falls back to the last endpoint when the draw reaches the total", () => {
    expect(pickEndpoint(weighted(1, 1, 1), () => 1)).toBe(2);
  });

  it("sends traffic in proportion to the weights", () => {
    const endpoints = weighted(1, 2, 7);
    const counts = [0, 0, 0];
    const n = 20_000;
    for (let i = 0; i < n; i++) counts[pickEndpoint(endpoints)]!++;
    expect(counts[0]! / n).toBeCloseTo(0.1, 1);
    expect(counts[1]! / n).toBeCloseTo(0.2, 1);
    expect(counts[2]! / n).toBeCloseTo(0.7, 1);
  });
});

describe("endpointOrder", () => {
  it("starts at the weighted pick and fails over to the next endpoints in turn", () => {
    const server = { endpoints: weighted(1, 1, 1), retries: 2 };
    expect(endpointOrder(server, { random: sequence(0.5) })).toEqual([1, 2, 0]);
  });

  it("tries 1 + retries endpoints, wrapping round, but at most 1 + twice the endpoints", () => {
    expect(endpointOrder({ endpoints: weighted(1, 1), retries: 3 }, { random: () => 0.9 })).toEqual([
      1, 0, 1, 0,
    ]);
    expect(endpointOrder({ endpoints: weighted(1, 1), retries: 100 }, { random: () => 0 })).toEqual([
      0, 1, 0, 1, 0,
    ]);
  });

  it("tries a single endpoint again when retries allow", () => {
    expect(endpointOrder({ endpoints: weighted(1), retries: 1 })).toEqual([0, 0]);
  });

  it("tries only the first pick without retries", () => {
    expect(endpointOrder({ endpoints: weighted(1, 9), retries: 0 }, { random: () => 0.5 })).toEqual([1]);
  });

  it("keeps a connection bound to its endpoint, without failover", () => {
    const server = { endpoints: weighted(1, 1, 1), retries: 5 };
    expect(endpointOrder(server, { bound: 2 })).toEqual([2]);
  });

  it("has nothing to try for a bound index the server no longer has, or for no endpoints", () => {
    expect(endpointOrder({ endpoints: weighted(1, 1), retries: 1 }, { bound: 2 })).toEqual([]);
    expect(endpointOrder({ endpoints: weighted(1, 1), retries: 1 }, { bound: -1 })).toEqual([]);
    expect(endpointOrder({ endpoints: [], retries: 3 })).toEqual([]);
  });
});

describe("isConnectFailure", () => {
  it("recognizes a refused connection, directly or as fetch's cause", () => {
    expect(isConnectFailure(Object.assign(new Error("x"), { code: "ECONNREFUSED" }))).toBe(true);
    const cause = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
    expect(isConnectFailure(new TypeError("fetch failed", { cause }))).toBe(true);
  });

  it("does not count failures after a connection was made", () => {
    expect(isConnectFailure(Object.assign(new Error("x"), { code: "UND_ERR_HEADERS_TIMEOUT" }))).toBe(false);
    expect(isConnectFailure(new Error("Error POSTing to endpoint (HTTP 500)"))).toBe(false);
    expect(isConnectFailure(undefined)).toBe(false);
  });
});
