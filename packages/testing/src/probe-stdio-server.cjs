// A minimal MCP server over stdio for isolation tests: its one tool, `probe`, reports who the
// process runs as and what it can read of its parent (the data plane) and of given paths.
const fs = require("node:fs");
const tryRead = (file) => {
  try {
    fs.readFileSync(file);
    return "read";
  } catch (err) {
    return err.code;
  }
};
const reply = (id, result) => process.stdout.write(`${JSON.stringify({ jsonrpc: "2.0", id, result })}\n`);
let buffer = "";
process.stdin.on("data", (chunk) => {
  buffer += chunk;
  for (let i = buffer.indexOf("\n"); i >= 0; i = buffer.indexOf("\n")) {
    const message = JSON.parse(buffer.slice(0, i));
    buffer = buffer.slice(i + 1);
    if (message.id === undefined) continue;
    if (message.method === "initialize")
      reply(message.id, {
        protocolVersion: message.params.protocolVersion,
        capabilities: { tools: {} },
        serverInfo: { name: "probe", version: "1" },
      });
    else if (message.method === "tools/list")
      reply(message.id, { tools: [{ name: "probe", inputSchema: { type: "object" } }] });
    else if (message.method === "tools/call") {
      const paths = message.params.arguments?.paths ?? [];
      const report = {
        uid: process.getuid(),
        pid: process.pid,
        cwd: process.cwd(),
        home: process.env.HOME,
        env_names: Object.keys(process.env).sort(),
        parent_environ: tryRead(`/proc/${process.ppid}/environ`),
        parent_mem: tryRead(`/proc/${process.ppid}/mem`),
        paths: Object.fromEntries(paths.map((p) => [p, tryRead(p)])),
      };
      reply(message.id, { content: [{ type: "text", text: JSON.stringify(report) }] });
    } else reply(message.id, {});
  }
});
