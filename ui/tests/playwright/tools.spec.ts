// Home, playground, export and settings against the mocked backend.
import { expect, test } from "@playwright/test";
import { backend, calls, collectErrors, openApp } from "./helpers";

const SECRET = "hf_PlaywrightSecretToken0123456789";

test.describe("home", () => {
  test("shows the machine, recent runs and starts a new run", async ({ page }) => {
    const errors = collectErrors(page);
    await openApp(page, "home");
    await expect(page.getByTestId("home-hardware")).toContainText("AMD Ryzen 7 5800U");
    await expect(page.getByTestId("home-memory")).toHaveText("16.0 GiB");
    const recent = page.getByTestId("home-recent-run");
    await expect(recent).toHaveCount(2);
    await expect(recent.first()).toHaveAttribute("href", "#run/run-2");
    await expect(recent.first()).toContainText("completed");
    await expect(recent.first()).toContainText(/best eval loss \d\.\d{3}/);
    await expect(page.getByTestId("home-first-run")).toHaveCount(0);
    expect(errors).toEqual([]);
    await page.getByTestId("home-new-run").click();
    await expect(page).toHaveURL(/#new$/);
  });

  test("offers a first model when none is registered", async ({ page }) => {
    await openApp(page, "home", "?state=empty");
    const card = page.getByTestId("home-first-run");
    await expect(card).toBeVisible();
    await expect(page.getByTestId("home-download-recommended")).toHaveText("Download SmolLM2 135M Instruct");
    await expect(page.getByTestId("home-no-runs")).toBeVisible();
    await page.getByTestId("home-pick-local").click();
    await expect(page).toHaveURL(/#models$/);
  });
});

test.describe("playground", () => {
  test("one prompt answered by the base and two adapters side by side", async ({ page }) => {
    const errors = collectErrors(page);
    await openApp(page, "playground/run-1");
    await expect(page.getByTestId("playground-model")).toHaveValue("smollm2-135m-instruct-q4-1");
    await expect(page.getByTestId("playground-adapter-a")).toHaveValue("run-1");
    await page.getByTestId("playground-adapter-b").selectOption("run-2");
    const prompt = "Extract the person's name, age and city as JSON: Mei Nilsson, 69, lives in Cluj.";
    await page.getByTestId("playground-prompt").fill(prompt);
    await page.getByTestId("playground-send").click();

    const answers = page.getByTestId("playground-exchange").first().getByTestId("playground-answer");
    await expect(answers).toHaveCount(3);
    await expect(answers.nth(0)).toHaveAttribute("data-adapter", "base");
    await expect(answers.nth(1)).toHaveAttribute("data-adapter", "run-1");
    await expect(answers.nth(2)).toHaveAttribute("data-adapter", "run-2");
    await expect(answers.nth(1)).toContainText('{"name": "Mei Nilsson", "age": 69, "city": "Cluj"}');
    await expect(answers.nth(0)).toContainText(/\d+ tokens · [\d.]+ s · [\d.]+ tokens\/s/);

    const chat = await calls(page, "chat");
    expect(chat).toHaveLength(1);
    expect(chat[0].args).toEqual({
      model: "smollm2-135m-instruct-q4-1",
      adapters: [null, "run-1", "run-2"],
      prompt,
      maxTokens: 128,
      temperature: 0.7,
    });

    // Ctrl+Enter sends again; the history keeps both, newest first
    await page.getByTestId("playground-prompt").fill("Born and raised in Prague, Tomas Aziz is now 46 years old.");
    await page.getByTestId("playground-prompt").press("Control+Enter");
    await expect(page.getByTestId("playground-exchange")).toHaveCount(2);
    await expect(page.getByTestId("playground-exchange").first().getByTestId("playground-answer").nth(1)).toContainText("Tomas Aziz");
    expect(errors).toEqual([]);
  });
});

test.describe("export", () => {
  test("PEFT: the stage while it runs, then the files, the path and Reveal", async ({ page }) => {
    const errors = collectErrors(page);
    await openApp(page, "export/run-1");
    await expect(page.getByTestId("export-summary")).toContainText("lora");
    await page.getByTestId("export-peft").click();
    await expect(page.getByTestId("export-stage")).toHaveText(/reading the base model|hashing the base model|writing the PEFT adapter/);
    const done = page.getByTestId("export-done");
    await expect(done).toBeVisible();
    const path = "/home/ada/.local/share/whetstone/exports/run-1-peft";
    await expect(done).toHaveAttribute("data-path", path);
    await expect(page.getByTestId("export-path")).toHaveText(path);
    await expect(done.getByTestId("export-file")).toHaveCount(4);
    await expect(done).toContainText("adapter_model.safetensors");
    await expect(done).toContainText(/3\.5 MiB/);
    await page.getByTestId("export-reveal").click();
    await expect.poll(async () => (await calls(page, "plugin:opener|reveal_item_in_dir")).map((c) => c.args)).toEqual([{ paths: [path] }]);
    expect((await calls(page, "export_run"))[0].args).toEqual({ run: "run-1", format: "peft" });
    expect(errors).toEqual([]);
  });

  test("Ollama shows the next command; GGUF sends the chosen dtype", async ({ page }) => {
    await openApp(page, "export/run-1");
    await page.getByTestId("export-ollama").click();
    await expect(page.getByTestId("export-next-step")).toHaveText(/^ollama create smollm2-135m-instruct-run-1 -f .*\/exports\/run-1-ollama\/Modelfile$/);
    await page.getByTestId("export-dtype-gguf").selectOption("q8_0");
    await page.getByTestId("export-gguf").click();
    await expect(page.locator('[data-testid="export-done"][data-format="gguf"]')).toBeVisible();
    expect((await calls(page, "export_run")).map((c) => c.args)).toEqual([
      { run: "run-1", format: "ollama" },
      { run: "run-1", format: "gguf", dtype: "q8_0" },
    ]);
  });

  test("a method a format cannot hold: the backend's reason in an alert", async ({ page }) => {
    await openApp(page, "home");
    const run = await backend<{ id: string }>(page, "run_start", {
      model: "smollm2-135m-instruct-q4-1",
      dataset: "whetstone-demo-extract",
      method: "adapter",
      sets: ["max_steps=20"],
    });
    await backend(page, "run_control", { id: run.id, action: "stop" });
    await page.evaluate((id) => (location.hash = `#export/${id}`), run.id);
    await page.getByTestId("export-peft").click();
    const alert = page.getByRole("alert");
    await expect(alert).toContainText("a `adapter` run has no PEFT adapter form");
    await expect(page.getByTestId("export-done")).toHaveCount(0);
  });
});

test.describe("settings", () => {
  test("saving a token shows it is stored and never shows the token", async ({ page }) => {
    const errors = collectErrors(page);
    await openApp(page, "settings");
    const status = page.getByTestId("settings-token-status");
    await expect(status).toHaveAttribute("data-present", "false");
    await expect(page.getByTestId("settings-token-input")).toHaveAttribute("type", "password");
    await page.getByTestId("settings-token-input").fill(SECRET);
    await page.getByTestId("settings-token-save").click();
    await expect(status).toHaveAttribute("data-source", "keychain");
    await expect(status).toContainText("stored in the system keychain");
    await expect(page.getByTestId("settings-token-input")).toHaveValue("");
    const text = await page.evaluate(() => document.body.innerText + document.documentElement.outerHTML);
    expect(text).not.toContain(SECRET);
    expect((await calls(page, "token_set"))[0].args).toEqual({ token: SECRET });

    await page.getByTestId("settings-token-remove").click();
    await expect(status).toHaveAttribute("data-present", "false");
    expect(errors).toEqual([]);
  });

  test("device, theme and language choices take effect and persist", async ({ page }) => {
    await openApp(page, "settings");
    await expect(page.getByTestId("settings-data-dir")).toHaveValue("/home/ada/.local/share/whetstone");
    await page.getByRole("radio", { name: /^CPU/ }).check();
    expect(await page.evaluate(() => localStorage.getItem("whetstone.device"))).toBe("cpu:0");
    await expect(page.getByRole("radio", { name: /CUDA/ })).toBeDisabled();

    await page.getByRole("radio", { name: "Dark" }).check();
    await expect(page.locator("html")).toHaveAttribute("data-theme", "dark");
    await page.getByRole("radio", { name: "Light" }).check();
    await expect(page.locator("html")).toHaveAttribute("data-theme", "light");
    await page.getByRole("radio", { name: "Dark" }).check();

    await page.getByRole("radio", { name: "简体中文" }).check();
    await expect(page.getByTestId("nav-settings")).toHaveText("设置");
    // switching the language keeps the theme chosen here
    await expect(page.locator("html")).toHaveAttribute("data-theme", "dark");
    await page.reload();
    await expect(page.locator("html")).toHaveAttribute("data-theme", "dark");
    await expect(page.getByTestId("nav-settings")).toHaveText("设置");
    await expect(page.getByRole("radio", { name: "深色" })).toBeChecked();
  });
});

test.describe("serve", () => {
  test("starts a server with an adapter, shows the URL, a snippet and live counters, adds and removes adapters", async ({ page }) => {
    const errors = collectErrors(page);
    await openApp(page, "serve");
    await expect(page.getByTestId("serve-model")).toHaveValue("smollm2-135m-instruct-q4-1");
    await page.getByTestId("serve-adapter").first().check();
    await page.getByTestId("serve-public").check();
    await expect(page.getByRole("note")).toContainText("API key");
    await page.getByTestId("serve-key").fill("sk-local");
    await page.getByTestId("serve-start").click();
    await expect(page.getByTestId("serve-url")).toHaveText(/^http:\/\/[\d.]+:8080\/v1$/);
    const start = (await calls(page, "serve_start"))[0].args;
    expect(start).toMatchObject({ model: "smollm2-135m-instruct-q4-1", port: 8080, public: true, apiKey: "sk-local" });
    const adapters = start.adapters as string[];
    expect(adapters).toHaveLength(1);
    const rows = page.getByTestId("serve-model-row");
    await expect(rows).toHaveCount(2);
    // the snippet names the first adapter and hides the key
    await expect(page.getByTestId("serve-snippet")).toContainText(`model="${adapters[0]}"`);
    await expect(page.getByTestId("serve-snippet")).not.toContainText("sk-local");
    // counters move while the screen is open (the mock's client calls twice a second)
    await expect(page.getByTestId("serve-requests")).not.toHaveText("0", { timeout: 5000 });
    await page.getByTestId("serve-remove").first().click();
    await expect(rows).toHaveCount(1);
    await page.getByTestId("serve-add-pick").selectOption(adapters[0]);
    await page.getByTestId("serve-add").click();
    await expect(rows).toHaveCount(2);
    await page.getByTestId("serve-stop").click();
    await expect(page.getByTestId("serve-setup")).toBeVisible();
    expect(errors).toEqual([]);
  });
});
