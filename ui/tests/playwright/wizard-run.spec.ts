// The whole path of a first run: Home → New run → model → sample dataset → SFT → LoRA → Quick →
// Review → Start → the live Run screen fills its loss chart → Stop → Runs lists the run.
import { expect, test } from "@playwright/test";
import { backend, calls, collectErrors, openApp } from "./helpers";

test("a LoRA run from Home to Runs", async ({ page }) => {
  const errors = collectErrors(page);
  // 100 ms per event batch: Quick's 60 steps take about 6 s, time enough to stop it
  await openApp(page, "home", "?batchMs=100");
  await page.getByTestId("home-new-run").click();
  await expect(page).toHaveURL(/#new$/);

  await expect(page.getByTestId("wizard-step-model")).toBeVisible();
  await page.locator('[data-testid="model-option"][data-id="smollm2-135m-instruct-q4-1"]').click();
  await page.getByTestId("wizard-next").click();

  await expect(page.getByTestId("wizard-step-dataset")).toBeVisible();
  await page.getByTestId("dataset-sample").first().click();
  await expect(page.locator('[data-testid="dataset-option"][data-id="whetstone-demo-extract"] input')).toBeChecked();
  await page.getByTestId("wizard-next").click();

  await expect(page.getByTestId("wizard-step-goal")).toBeVisible();
  await expect(page.locator('[data-testid="goal-option"][data-objective="sft"]')).toHaveAttribute("data-selected", "true");
  await page.getByTestId("wizard-next").click();

  await expect(page.getByTestId("wizard-step-method")).toBeVisible();
  const lora = page.locator('[data-testid="method-row"][data-method="lora"]');
  await expect(lora).toContainText("921,600");
  await lora.click();
  await expect(lora).toHaveAttribute("data-selected", "true");
  await page.getByTestId("wizard-next").click();

  await expect(page.getByTestId("wizard-step-settings")).toBeVisible();
  await page.getByTestId("preset-quick").click();
  await expect(page.getByTestId("preset-quick")).toHaveAttribute("aria-pressed", "true");
  await page.getByTestId("wizard-next").click();

  await expect(page.getByTestId("wizard-step-review")).toBeVisible();
  await page.getByTestId("wizard-start").click();
  await expect(page).toHaveURL(/#run\/run-3$/);
  const start = (await calls(page, "run_start"))[0].args;
  expect(start).toMatchObject({ model: "smollm2-135m-instruct-q4-1", dataset: "whetstone-demo-extract", method: "lora" });
  expect(start.sets).toContain("max_steps=60");

  const chart = page.getByTestId("loss-chart");
  await expect.poll(async () => Number(await chart.getAttribute("data-points")), { timeout: 10_000 }).toBeGreaterThan(0);
  const seen = Number(await chart.getAttribute("data-points"));
  await expect.poll(async () => Number(await chart.getAttribute("data-points"))).toBeGreaterThan(seen);

  await page.getByTestId("run-stop").click();
  await expect.poll(async () => (await backend<{ status: string }>(page, "run_show", { id: "run-3" })).status).toBe("cancelled");

  await page.getByTestId("nav-runs").click();
  await expect(page.getByTestId("run-row").filter({ hasText: "run-3" })).toHaveCount(1);
  expect(errors).toEqual([]);
});
