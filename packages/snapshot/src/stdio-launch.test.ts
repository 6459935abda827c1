import { describe, expect, it } from "vitest";
import {
  checkCatalogEntry,
  checkStdioValues,
  resolveStdioLaunch,
  type StdioParameter,
} from "./stdio-launch.ts";

const p = (o: Partial<StdioParameter> & { name: string }): StdioParameter => ({
  type: "string",
  required: false,
  secret: false,
  ...o,
});

describe("stdio launch contract", () => {
  const parameters = [
    p({ name: "root", required: true }),
    p({ name: "dirs", type: "string_list" }),
    p({ name: "port", type: "integer" }),
    p({ name: "token", secret: true, env: "GITHUB_TOKEN" }),
    p({ name: "mode", enum: ["fast", "safe"] }),
  ];
  const entry = {
    command: "node",
    args: ["server.js", "{{root}}", "{{dirs}}", "--port={{port}}", "--mode={{mode}}"],
    env: { LOG: "info" },
    parameters,
  };

  it("fills placeholders, expands lists, drops arguments of unset parameters and routes env parameters", () => {
    checkCatalogEntry(entry);
    const { values, secrets } = checkStdioValues(parameters, {
      root: "/data",
      dirs: ["/a", "/b"],
      token: "ghp_x",
    });
    expect(values).toEqual({ root: "/data", dirs: ["/a", "/b"] });
    expect(secrets).toEqual({ token: "ghp_x" });
    expect(resolveStdioLaunch({ ...entry, values }, secrets)).toEqual({
      command: "node",
      args: ["server.js", "/data", "/a", "/b"],
      env: { LOG: "info", GITHUB_TOKEN: "ghp_x" },
    });
  });

  it("refuses values that would change what runs or that the entry does not declare", () => {
    expect(() => checkStdioValues(parameters, {})).toThrow(/'root' is required/);
    expect(() => checkStdioValues(parameters, { root: "-e" })).toThrow(/may not start with '-'/);
    expect(() => checkStdioValues(parameters, { root: "/x", dirs: ["--inspect"] })).toThrow(/'-'/);
    expect(() => checkStdioValues(parameters, { root: "/x", extra: "1" })).toThrow(/no parameter 'extra'/);
    expect(() => checkStdioValues(parameters, { root: "/x\n--evil" })).toThrow(/line breaks/);
    expect(() => checkStdioValues(parameters, { root: "/x", port: "80" })).toThrow(/integer/);
    expect(() => checkStdioValues(parameters, { root: "/x", mode: "other" })).toThrow(/one of/);
    const patterned = [p({ name: "flag", pattern: "--verbose|--quiet" })];
    expect(checkStdioValues(patterned, { flag: "--quiet" }).values).toEqual({ flag: "--quiet" });
    expect(() => checkStdioValues(patterned, { flag: "--quiet --eval" })).toThrow(/pattern/);
  });

  it("refuses catalog entries that set loader variables, name undeclared parameters or take paths relative to the caller", () => {
    expect(() => checkCatalogEntry({ ...entry, env: { NODE_OPTIONS: "--require x" } })).toThrow(
      /NODE_OPTIONS/,
    );
    expect(() =>
      checkCatalogEntry({ ...entry, parameters: [...parameters, p({ name: "pre", env: "LD_PRELOAD" })] }),
    ).toThrow(/LD_PRELOAD/);
    expect(() => checkCatalogEntry({ ...entry, args: ["{{nope}}"] })).toThrow(/undeclared parameter 'nope'/);
    expect(() => checkCatalogEntry({ ...entry, command: "bin/node" })).toThrow(/bare name/);
    expect(() => checkCatalogEntry({ ...entry, args: ["--dirs={{dirs}}"] })).toThrow(/argument of its own/);
  });
});
