// Every navigation link opens its screen without console errors; theme and language toggles.
import { expect, test } from "@playwright/test";
import { SCREENS, collectErrors, openApp } from "./helpers";

test("every nav link opens its screen with no console errors", async ({ page }) => {
  const errors = collectErrors(page);
  await openApp(page);
  for (const screen of SCREENS) {
    const link = page.getByTestId(`nav-${screen}`);
    await link.click();
    await expect(page).toHaveURL(new RegExp(`#${screen}$`));
    await expect(link).toHaveAttribute("aria-current", "page");
    await expect(page.locator("main h1").first()).toBeVisible();
  }
  // let late responses and events land before judging
  await page.waitForTimeout(300);
  expect(errors).toEqual([]);
});

test("the theme toggle switches data-theme", async ({ page }) => {
  await openApp(page);
  const html = page.locator("html");
  const before = await html.getAttribute("data-theme");
  expect(["light", "dark"]).toContain(before);
  await page.getByTestId("theme-toggle").click();
  const after = before === "dark" ? "light" : "dark";
  await expect(html).toHaveAttribute("data-theme", after);
  // the page really changes colour, not only the attribute
  const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const afterBg = await bg();
  await page.getByTestId("theme-toggle").click();
  await expect(html).toHaveAttribute("data-theme", before!);
  expect(await bg()).not.toBe(afterBg);
});

test("the language toggle shows Chinese text", async ({ page }) => {
  await openApp(page);
  await expect(page.getByTestId("nav-home")).toHaveText("Home");
  await page.getByTestId("lang-toggle").click();
  await expect(page.getByTestId("nav-home")).toHaveText("主页");
  await expect(page.getByTestId("nav-settings")).toHaveText("设置");
  await expect(page.locator("html")).toHaveAttribute("lang", "zh-CN");
  await expect(page.getByTestId("home-new-run")).toHaveText("新建训练");
  await page.getByTestId("lang-toggle").click();
  await expect(page.getByTestId("nav-home")).toHaveText("Home");
});
