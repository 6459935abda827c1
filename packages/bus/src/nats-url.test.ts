import { describe, expect, it } from "vitest";
import { natsConnectOptions } from "./nats.ts";

describe("natsConnectOptions", () => {
  it("passes servers without credentials through", () => {
    expect(natsConnectOptions("nats://a:4222,nats://b:4222")).toEqual({
      servers: ["nats://a:4222", "nats://b:4222"],
    });
  });

  it("takes user and password out of the URLs, decoded", () => {
    expect(
      natsConnectOptions(
        "nats://data-plane:p%40ss%3Aword@nats:4222, nats://data-plane:p%40ss%3Aword@nats2:4222",
      ),
    ).toEqual({
      servers: ["nats://nats:4222", "nats://nats2:4222"],
      user: "data-plane",
      pass: "p@ss:word",
    });
  });

  it("reads a lone userinfo as a token, also without a scheme", () => {
    expect(natsConnectOptions("s3cr3t@127.0.0.1:4222")).toEqual({
      servers: ["127.0.0.1:4222"],
      token: "s3cr3t",
    });
  });
});
