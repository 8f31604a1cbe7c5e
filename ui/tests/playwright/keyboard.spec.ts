// Tab reaches the navigation and the primary buttons, and focus is visible.
import { expect, test, type Page } from "@playwright/test";
import { openApp } from "./helpers";

async function tabTo(page: Page, testid: string, max = 40): Promise<void> {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    const id = await page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.testid ?? null);
    if (id === testid) return;
  }
  throw new Error(`Tab never reached [data-testid=${testid}]`);
}

/** The focused element matches :focus-visible and draws an outline. */
async function expectVisibleFocus(page: Page): Promise<void> {
  const f = await page.evaluate(() => {
    const el = document.activeElement as HTMLElement;
    const s = getComputedStyle(el);
    return { visible: el.matches(":focus-visible"), style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
  });
  expect(f.visible).toBe(true);
  expect(f.style).not.toBe("none");
  expect(f.width).toBeGreaterThanOrEqual(2);
}

test("Tab reaches every nav link with a visible focus ring", async ({ page }) => {
  await openApp(page, "home");
  for (const screen of ["home", "new", "runs", "compare", "playground", "serve", "models", "datasets", "settings"]) {
    await tabTo(page, `nav-${screen}`, 3);
    await expectVisibleFocus(page);
  }
  await tabTo(page, "theme-toggle", 3);
  await expectVisibleFocus(page);
  await tabTo(page, "lang-toggle", 3);
});

test("Tab + Enter starts a new run from Home", async ({ page }) => {
  await openApp(page, "home");
  await expect(page.getByTestId("home-recent-run")).toHaveCount(2);
  await tabTo(page, "home-new-run");
  await expectVisibleFocus(page);
  await page.keyboard.press("Enter");
  await expect(page).toHaveURL(/#new$/);
});

test("keyboard only: playground prompt to send, settings token save", async ({ page }) => {
  await openApp(page, "playground/run-1");
  await expect(page.getByTestId("playground-adapter-a")).toHaveValue("run-1");
  await tabTo(page, "playground-prompt");
  await page.keyboard.type("Meet Bruno Berg: 47 years old, cyclist, resident of Prague.");
  await tabTo(page, "playground-send", 6);
  await expectVisibleFocus(page);
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("playground-answer")).toHaveCount(2);

  await page.evaluate(() => (location.hash = "#settings"));
  await expect(page.getByTestId("settings-token-status")).toHaveAttribute("data-present", "false");
  await tabTo(page, "settings-token-input");
  await page.keyboard.type("hf_keyboardOnly");
  await page.keyboard.press("Enter");
  await expect(page.getByTestId("settings-token-status")).toHaveAttribute("data-source", "keychain");
});
