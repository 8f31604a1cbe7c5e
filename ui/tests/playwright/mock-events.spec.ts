// The mocked queue streams a started run to the live Run screen: the loss chart fills up,
// Stop ends it, and the Runs list shows it.
import { expect, test } from "@playwright/test";
import { backend, calls, openApp } from "./helpers";

test("a started run streams events to the Run screen and can be stopped", async ({ page }) => {
  // 200 batches of 50 ms: long enough to stop it halfway
  await openApp(page, "home", "?batches=200");
  const run = await backend<{ id: string; status: string }>(page, "run_start", {
    model: "smollm2-135m-instruct-q4-1",
    dataset: "whetstone-demo-extract",
    method: "lora",
    sets: ["max_steps=200", "eval_every=20"],
  });
  expect(run.status).toBe("queued");
  await page.evaluate((id) => (location.hash = `#run/${id}`), run.id);
  const chart = page.getByTestId("loss-chart");
  await expect.poll(async () => Number(await chart.getAttribute("data-points")), { timeout: 10_000 }).toBeGreaterThan(5);
  const before = Number(await chart.getAttribute("data-points"));
  await expect.poll(async () => Number(await chart.getAttribute("data-points"))).toBeGreaterThan(before);

  await page.getByTestId("run-stop").click();
  await expect.poll(async () => (await backend<{ status: string }>(page, "run_show", { id: run.id })).status).toBe("cancelled");
  expect((await calls(page, "run_control")).map((c) => c.args)).toContainEqual({ id: run.id, action: "stop" });

  await page.getByTestId("nav-runs").click();
  await expect(page.getByTestId("run-row").filter({ hasText: run.id })).toHaveCount(1);
});
