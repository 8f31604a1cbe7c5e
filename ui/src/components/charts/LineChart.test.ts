import { render, screen } from "@testing-library/svelte";
import { afterEach, describe, expect, it, vi } from "vitest";

vi.mock("uplot", () => ({
  default: class {
    constructor() {
      throw new Error("canvas 2d context unavailable");
    }
  },
}));

import LineChart from "./LineChart.svelte";

afterEach(() => vi.restoreAllMocks());

describe("LineChart", () => {
  it("shows why the chart could not be drawn instead of failing silently", async () => {
    vi.spyOn(navigator, "userAgent", "get").mockReturnValue("Mozilla/5.0 (X11; Linux x86_64) Chrome/120");
    const logged = vi.spyOn(console, "error").mockImplementation(() => {});
    render(LineChart, { data: [[1, 2], [3, 2]], series: [{ label: "train", color: "--accent" }], testid: "c" });
    const box = await screen.findByTestId("c-error");
    expect(box.getAttribute("role")).toBe("alert");
    expect(box.textContent).toContain("Could not draw the chart");
    expect(box.textContent).toContain("canvas 2d context unavailable");
    expect(logged).toHaveBeenCalled();
  });
});
