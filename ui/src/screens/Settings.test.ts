import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import Settings from "./Settings.svelte";
import { api, reveal } from "../lib/ipc";
import { locale } from "../lib/locale.svelte";
import { preferredDevice } from "../lib/prefs";
import { doctor } from "../components/tools/test-fixtures";

vi.mock("../lib/ipc", () => ({
  api: { doctor: vi.fn(), tokenStatus: vi.fn(), tokenSet: vi.fn(), tokenRemove: vi.fn() },
  reveal: vi.fn(),
}));

const SECRET = "hf_VitestSecretToken42";

beforeEach(() => {
  localStorage.clear();
  locale.current = "en";
  vi.mocked(api.doctor).mockResolvedValue(doctor());
  vi.mocked(api.tokenStatus).mockResolvedValue({ present: false, source: "none" });
  vi.mocked(api.tokenSet).mockReset();
  vi.mocked(api.tokenRemove).mockReset();
});
afterEach(() => {
  locale.current = "en";
});

describe("Settings", () => {
  it("saves a token, shows where it is kept, and never renders it", async () => {
    vi.mocked(api.tokenSet).mockResolvedValue({ present: true, source: "keychain" });
    const { container } = render(Settings);
    const status = await screen.findByTestId("settings-token-status");
    await waitFor(() => expect(status.dataset.present).toBe("false"));
    expect(status.textContent).toContain("No token");
    const input = screen.getByTestId("settings-token-input") as HTMLInputElement;
    expect(input.type).toBe("password");
    expect((screen.getByTestId("settings-token-remove") as HTMLButtonElement).disabled).toBe(true);

    await fireEvent.input(input, { target: { value: SECRET } });
    await fireEvent.click(screen.getByTestId("settings-token-save"));
    expect(api.tokenSet).toHaveBeenCalledWith(SECRET);
    await waitFor(() => expect(status.dataset.source).toBe("keychain"));
    expect(status.textContent).toContain("stored in the system keychain");
    expect(input.value).toBe("");
    expect(container.innerHTML).not.toContain(SECRET);
    expect(container.textContent).not.toContain(SECRET);

    vi.mocked(api.tokenRemove).mockResolvedValue({ present: false, source: "none" });
    await fireEvent.click(screen.getByTestId("settings-token-remove"));
    expect(api.tokenRemove).toHaveBeenCalled();
    await waitFor(() => expect(status.dataset.present).toBe("false"));
  });

  it("a failed save shows the error, clears the field and still hides the token", async () => {
    vi.mocked(api.tokenSet).mockRejectedValue("the OS keychain is locked: unlock it and try again");
    const { container } = render(Settings);
    const input = (await screen.findByTestId("settings-token-input")) as HTMLInputElement;
    await fireEvent.input(input, { target: { value: SECRET } });
    await fireEvent.submit(input.form!);
    expect((await screen.findByTestId("settings-token-error")).textContent).toContain("the OS keychain is locked");
    expect(input.value).toBe("");
    expect(container.innerHTML).not.toContain(SECRET);
  });

  it("an HF_TOKEN from the environment is reported and cannot be removed here", async () => {
    vi.mocked(api.tokenStatus).mockResolvedValue({ present: true, source: "HF_TOKEN" });
    render(Settings);
    const status = await screen.findByTestId("settings-token-status");
    await waitFor(() => expect(status.textContent).toContain("HF_TOKEN"));
    expect((screen.getByTestId("settings-token-remove") as HTMLButtonElement).disabled).toBe(true);
    expect((screen.getByTestId("settings-token-save") as HTMLButtonElement).disabled).toBe(true);
  });

  it("stores the device, applies the theme and switches the language", async () => {
    render(Settings);
    const cpu = (await screen.findByRole("radio", { name: /Test CPU/ })) as HTMLInputElement;
    expect((screen.getByRole("radio", { name: /CUDA/ }) as HTMLInputElement).disabled).toBe(true);
    await fireEvent.click(cpu);
    expect(preferredDevice()).toBe("cpu:0");
    await fireEvent.click(screen.getByRole("radio", { name: /Automatic/ }));
    expect(preferredDevice()).toBeUndefined();

    await fireEvent.click(screen.getByRole("radio", { name: "Dark" }));
    expect(document.documentElement.dataset.theme).toBe("dark");
    expect(localStorage.getItem("whetstone.theme")).toBe("dark");
    expect(localStorage.getItem("whetstone.themeChoice")).toBe("dark");

    await fireEvent.click(screen.getByRole("radio", { name: "简体中文" }));
    expect(locale.current).toBe("zh");
    await screen.findByText("Hugging Face 令牌");
  });

  it("shows the data directory read-only with Reveal", async () => {
    render(Settings);
    const dir = (await screen.findByTestId("settings-data-dir")) as HTMLInputElement;
    expect(dir.value).toBe("/d");
    expect(dir.readOnly).toBe(true);
    await fireEvent.click(screen.getByTestId("settings-reveal"));
    expect(reveal).toHaveBeenCalledWith("/d");
  });
});
