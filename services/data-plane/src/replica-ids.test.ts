import { describe, expect, it } from "vitest";
import { continuationState, mintSessionId, parseContinuationState, sessionOwner } from "./replica-ids.ts";

describe("replica-scoped ids", () => {
  it("a minted session id names its replica, even one with dots in its name", () => {
    expect(sessionOwner(mintSessionId("dp-1"))).toBe("dp-1");
    expect(sessionOwner(mintSessionId("pod.a.b"))).toBe("pod.a.b");
    expect(mintSessionId("dp-1")).not.toBe(mintSessionId("dp-1"));
  });

  it("ids of other layouts (upstream session ids, other versions) name no replica", () => {
    expect(sessionOwner("3f1c2a56-7b9e-4d0e-9a51-2c8f6b7e1d40")).toBeUndefined();
    expect(sessionOwner("s2.dp-1.3f1c2a56-7b9e-4d0e-9a51-2c8f6b7e1d40")).toBeUndefined();
    expect(sessionOwner("s1.dp-1.not-a-uuid")).toBeUndefined();
    expect(sessionOwner("s1..3f1c2a56-7b9e-4d0e-9a51-2c8f6b7e1d40")).toBeUndefined();
  });

  it("a continuation state round-trips its owner and key; anything else is not one", () => {
    const key = "3f1c2a56-7b9e-4d0e-9a51-2c8f6b7e1d40";
    expect(parseContinuationState(continuationState("dp-2", key))).toEqual({ owner: "dp-2", key });
    expect(parseContinuationState(`s1.dp-2.${key}`)).toBeUndefined();
    expect(parseContinuationState(42)).toBeUndefined();
    expect(parseContinuationState(undefined)).toBeUndefined();
  });
});
