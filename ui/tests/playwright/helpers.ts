// Shared helpers for the specs: open the mocked app and collect console errors.
import { expect, type Page } from "@playwright/test";

export const SCREENS = ["home", "new", "runs", "compare", "playground", "serve", "models", "datasets", "settings"] as const;

/** Open the app on the mocked backend at `hash` (without `#`); `query` like "?state=empty". */
export async function openApp(page: Page, hash = "home", query = ""): Promise<void> {
  await page.goto(`/tests/mock/index.html${query}#${hash}`);
  // the first page a worker opens waits for Vite to compile the app on demand: seconds on a
  // busy 2-core machine, so this one wait is longer than the default
  await expect(page.getByTestId("status-bar")).toBeVisible({ timeout: 30_000 });
}

/** Console errors and uncaught exceptions from now on. */
export function collectErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

export type Call = { cmd: string; args: Record<string, unknown> };

/** Every IPC call the app made so far. */
export async function calls(page: Page, cmd?: string): Promise<Call[]> {
  const all = await page.evaluate(() => window.__whetstoneMock?.calls ?? []);
  return cmd ? all.filter((c) => c.cmd === cmd) : all;
}

/** Call the mocked backend directly (to set up state the way another screen would). */
export async function backend<T>(page: Page, cmd: string, args: Record<string, unknown> = {}): Promise<T> {
  return (await page.evaluate(([c, a]) => window.__whetstoneMock!.handle(c, a), [cmd, args] as const)) as T;
}
