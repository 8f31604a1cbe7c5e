// How a rejected command reaches components: one error type whatever the backend sent.
import { describe, expect, it } from "vitest";
import { BackendError, backendError } from "./ipc";

describe("backendError", () => {
  it("reads the backend's {kind, message} and prints as the message", () => {
    const e = backendError({ kind: "bug", message: "a background task failed: panicked" });
    expect(e).toBeInstanceOf(BackendError);
    expect(e.kind).toBe("bug");
    expect(String(e)).toBe("a background task failed: panicked");
    expect(e.message).toBe("a background task failed: panicked");
  });

  it("takes a bare string as the user's error and anything else as a bug", () => {
    expect(backendError("run.toml: `lr` is not a number").kind).toBe("user");
    const odd = backendError(42);
    expect(odd.kind).toBe("bug");
    expect(odd.message).toBe("42");
    const same = backendError({ kind: "store", message: "database is locked" });
    expect(backendError(same)).toBe(same);
  });
});

describe("the command list", () => {
  it("is the one src-tauri/commands.list declares: ipc.ts calls exactly those", async () => {
    const { readFileSync } = await import("node:fs");
    const { resolve } = await import("node:path");
    // vitest runs in ui/
    const list = readFileSync(resolve(process.cwd(), "../src-tauri/commands.list"), "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"))
      .sort();
    const ipc = readFileSync(resolve(process.cwd(), "src/lib/ipc.ts"), "utf8");
    const called = [...new Set([...ipc.matchAll(/call<[^>]*>\("([a-z_]+)"/g)].map((m) => m[1]))].sort();
    expect(called).toEqual(list);
  });
});
