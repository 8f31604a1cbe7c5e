// The mock answers every command ipc.ts can send, and refuses unknown ones loudly.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { expect, test } from "@playwright/test";
import { openApp } from "./helpers";

const read = (rel: string) => readFileSync(fileURLToPath(new URL(rel, import.meta.url)), "utf8");

test("every command of src-tauri/commands.list has a mock", () => {
  // the one list of the window's commands (ipc.ts calls exactly these: src/lib/ipc.test.ts)
  const used = read("../../../src-tauri/commands.list")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  expect(used.length).toBeGreaterThan(20);
  const mock = read("../mock/backend.ts");
  const handled = new Set([...mock.matchAll(/case "([a-z_:|]+)":/g)].map((m) => m[1]));
  expect(used.filter((c) => !handled.has(c))).toEqual([]);
});

test("an unknown command rejects with a clear message", async ({ page }) => {
  const messages: string[] = [];
  page.on("console", (m) => messages.push(m.text()));
  await openApp(page, "home");
  const err = await page.evaluate(async () => {
    const internals = (window as unknown as { __TAURI_INTERNALS__: { invoke: (c: string, a: object) => Promise<unknown> } }).__TAURI_INTERNALS__;
    try {
      await internals.invoke("no_such_command", {});
      return "resolved";
    } catch (e) {
      return String(e);
    }
  });
  expect(err).toContain("unknown command `no_such_command`");
  expect(messages.join("\n")).toContain("unknown command `no_such_command`");
});
