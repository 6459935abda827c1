// Runs the conformance fixture: `node --import <tsx> conformance-fixture-main.ts stdio`, or
// `… http [port]` (prints "conformance fixture listening on <url>" once it accepts connections).
import { listenConformanceHttp, serveConformanceStdio } from "./conformance-fixture.ts";

const [mode = "http", portArg = "0"] = process.argv.slice(2);

if (mode === "stdio") {
  await serveConformanceStdio();
  process.exit(0);
} else if (mode === "http") {
  const port = Number(portArg);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`invalid port: ${portArg}`);
    process.exit(2);
  }
  const fixture = await listenConformanceHttp(port);
  console.log(`conformance fixture listening on ${fixture.url}`);
  const stop = () => {
    void fixture.close().finally(() => process.exit(0));
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
} else {
  console.error(`usage: conformance-fixture-main.ts stdio | http [port]`);
  process.exit(2);
}
