// At 1024×700 no screen makes the page scroll sideways; wide content scrolls in its own box.
import { expect, test } from "@playwright/test";
import { SCREENS, openApp } from "./helpers";

test.use({ viewport: { width: 1024, height: 700 } });

const EXTRA = ["run/run-1", "compare/run-1,run-2", "playground/run-1", "export/run-1"];
/** Screens of this area: their content must fit the content column too. */
const TOOLS = new Set(["home", "playground", "settings", "export/run-1", "playground/run-1"]);

for (const hash of [...SCREENS, ...EXTRA]) {
  test(`no horizontal page scroll on #${hash}`, async ({ page }) => {
    await openApp(page, hash);
    await expect(page.locator("main h1").first()).toBeVisible();
    await page.waitForTimeout(300);
    const body = await page.evaluate(() => {
      const el = document.scrollingElement!;
      return { scroll: el.scrollWidth, client: el.clientWidth };
    });
    expect(body.scroll, `page scrollWidth ${body.scroll} > clientWidth ${body.client}`).toBeLessThanOrEqual(body.client);
    if (TOOLS.has(hash)) {
      const main = await page.evaluate(() => {
        const el = document.querySelector("main")!;
        return { scroll: el.scrollWidth, client: el.clientWidth };
      });
      expect(main.scroll, `main scrollWidth ${main.scroll} > clientWidth ${main.client}`).toBeLessThanOrEqual(main.client);
    }
  });
}
