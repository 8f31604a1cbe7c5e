// Playwright: the front end alone in Debian's Chromium against the mocked backend
// (tests/mock/). Playwright's own browser download is not used.
import { defineConfig } from "@playwright/test";

export default defineConfig({
  testDir: "./tests/playwright",
  // traces of failures go under node_modules/ (git-ignored), not into the work tree
  outputDir: "./node_modules/.cache/playwright-results",
  fullyParallel: true,
  workers: 2,
  forbidOnly: !!process.env.CI,
  retries: 0,
  timeout: 30_000,
  expect: { timeout: 5_000 },
  reporter: [["list"]],
  use: {
    baseURL: "http://127.0.0.1:5174",
    headless: true,
    viewport: { width: 1280, height: 820 },
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: "/usr/bin/chromium",
      args: ["--no-sandbox", "--disable-gpu"],
    },
  },
  projects: [{ name: "chromium", use: { browserName: "chromium" } }],
  webServer: {
    command: "npx vite --port 5174 --strictPort",
    url: "http://127.0.0.1:5174/tests/mock/index.html",
    reuseExistingServer: false,
    timeout: 60_000,
  },
});
