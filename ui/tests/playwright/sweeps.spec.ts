// Sweeps and soups: the wizard's Sweep option (keys, values, run count, total time) starts a
// sweep whose screen ranks the runs, charts setting vs loss and opens the best; "Make soup"
// from the sweep and from Runs opens the new soup run.
import { expect, test } from "@playwright/test";
import { backend, calls, collectErrors, openApp } from "./helpers";

test("a seed sweep from the wizard, then a greedy soup of its runs", async ({ page }) => {
  const errors = collectErrors(page);
  // short runs: 6 batches of 30 ms each
  await openApp(page, "new", "?batchMs=30&batches=6");
  await page.locator('[data-testid="model-option"][data-id="smollm2-135m-instruct-q4-1"]').click();
  await page.getByTestId("wizard-next").click();
  await page.getByTestId("dataset-sample").first().click();
  await page.getByTestId("wizard-next").click();
  await page.getByTestId("wizard-next").click();
  await page.locator('[data-testid="method-row"][data-method="lora"]').click();
  await page.getByTestId("wizard-next").click();

  await expect(page.getByTestId("wizard-step-settings")).toBeVisible();
  await page.getByTestId("preset-quick").click();
  await page.getByTestId("sweep-toggle").check();
  await page.getByTestId("sweep-key").first().selectOption("seed");
  await page.getByTestId("sweep-values").first().fill("1, 2");
  await expect(page.getByTestId("sweep-count")).toHaveText("2 runs");
  // a bad value is refused by name and holds the wizard on this step
  await page.getByTestId("sweep-add").click();
  await page.getByTestId("sweep-key").nth(1).selectOption("lr");
  await page.getByTestId("sweep-values").nth(1).fill("1e-4, abc");
  await expect(page.getByTestId("sweep-error")).toContainText("abc");
  await expect(page.getByTestId("wizard-next")).toBeDisabled();
  await page.getByTestId("sweep-values").nth(1).fill("1e-4, 3e-4");
  await expect(page.getByTestId("sweep-count")).toHaveText("4 runs");
  await page.getByTestId("wizard-next").click();

  await expect(page.getByTestId("review-sweep")).toContainText("seed × lr: 4 runs");
  await expect(page.getByTestId("review-sweep-time")).toContainText("4 runs: about");
  await expect(page.getByTestId("wizard-start")).toHaveText("Start sweep");
  await page.getByTestId("wizard-start").click();
  await expect(page).toHaveURL(/#sweep\/sweep-1$/);
  const spec = (await calls(page, "sweep_start"))[0].args.spec as { grid: { key: string; values: string[] }[]; sets: string[] };
  expect(spec.grid).toEqual([{ key: "seed", values: ["1", "2"] }, { key: "lr", values: ["1e-4", "3e-4"] }]);
  expect(spec.sets).toContain("max_steps=60");

  await expect(page.getByTestId("sweep-run")).toHaveCount(4);
  await expect(page.getByTestId("sweep-progress")).toHaveText(/4 of 4 runs finished/, { timeout: 20_000 });
  await expect(page.getByTestId("sweep-chart")).toHaveAttribute("data-points", "4");
  // ranked by best eval loss: the first row is the best, and "open best" names it
  const first = await page.getByTestId("sweep-run").first().getAttribute("data-id");
  await expect(page.getByTestId("sweep-open-best")).toContainText(first ?? "?");
  await page.getByTestId("sweep-metric").selectOption("tps");
  await expect(page.getByTestId("sweep-run")).toHaveCount(4);

  // every finished run is picked; leave one out, then a greedy soup of three
  await page.getByTestId("sweep-select").nth(3).uncheck();
  await expect(page.getByTestId("soup-make")).toHaveText("Make soup (3)");
  await page.getByTestId("soup-make").click();
  await expect(page).toHaveURL(/#run\/run-7$/);
  const soup = (await calls(page, "soup_make"))[0].args;
  expect(soup.greedy).toBe(true);
  expect((soup.runs as string[]).length).toBe(3);
  await expect(page.getByTestId("run-soup-info")).toContainText("greedy soup of");
  await expect(page.getByTestId("run-soup-info")).toContainText("left out");

  // (in-app navigation: a reload would start a fresh mocked backend)
  await page.evaluate(() => (location.hash = "#sweep/sweep-1"));
  await page.getByTestId("sweep-open-best").click();
  await expect(page).toHaveURL(new RegExp(`#run/${first}$`));
  await expect(page.getByTestId("run-sweep-link")).toHaveText("Part of sweep-1");
  expect(errors).toEqual([]);
});

test("Make soup from a selection in Runs, and the refusal of a run it cannot average", async ({ page }) => {
  const errors = collectErrors(page);
  await openApp(page, "runs");
  await expect(page.getByTestId("run-row")).toHaveCount(2);
  await expect(page.getByTestId("soup-make")).toHaveCount(0);
  for (const id of ["run-1", "run-2"]) await page.locator(`[data-testid="run-row"][data-id="${id}"] [data-testid="run-select"]`).check();
  // run-2 is DoRA: its changes do not average into a LoRA
  await page.getByTestId("soup-make").click();
  await expect(page.getByTestId("soup-error")).toContainText("`dora` run cannot go in a soup");

  // a second LoRA run, then a uniform soup of the two LoRA runs
  await backend(page, "run_start", { model: "smollm2-135m-instruct-q4-1", dataset: "whetstone-demo-extract", method: "lora", sets: ["max_steps=5"] });
  await expect.poll(async () => (await backend<{ status: string }>(page, "run_show", { id: "run-3" })).status, { timeout: 20_000 }).toBe("completed");
  await expect(page.getByTestId("run-row")).toHaveCount(3);
  await page.locator('[data-testid="run-row"][data-id="run-2"] [data-testid="run-select"]').uncheck();
  await page.locator('[data-testid="run-row"][data-id="run-3"] [data-testid="run-select"]').check();
  await expect(page.getByTestId("soup-make")).toHaveText("Make soup (2)");
  await page.getByTestId("soup-recipe").selectOption({ label: "uniform (every run)" });
  await page.getByTestId("soup-make").click();
  await expect(page).toHaveURL(/#run\/run-4$/);
  await expect(page.getByTestId("run-soup-info")).toContainText("uniform soup of");
  await page.getByTestId("nav-runs").click();
  await expect(page.locator('[data-testid="run-row"][data-id="run-4"] [data-testid="run-soup"]')).toHaveText("soup");
  expect(errors).toEqual([]);
});

test("a run's task metrics, base against tuned, on its screen", async ({ page }) => {
  const errors = collectErrors(page);
  await openApp(page, "run/run-1");
  await expect(page.getByTestId("run-summary")).toBeVisible();
  await expect(page.locator('[data-testid="run-task-metric"][data-metric="exact_match"]')).toContainText("0.000 → 0.900");
  await expect(page.getByTestId("run-task-metric")).toHaveCount(3);
  expect(errors).toEqual([]);
});
