import { render, screen } from "@testing-library/svelte";
import { afterEach, describe, expect, it, vi } from "vitest";

vi.mock("uplot", () => ({
  default: class {
    constructor() {
      throw new Error("canvas 2d context unavailable");
    }
  },
}));

import LineChart, { WHOLE_INCRS, axisWidth } from "./LineChart.svelte";

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

  it("steps tick on whole numbers and the value axis fits its longest label", () => {
    expect(WHOLE_INCRS.slice(0, 7)).toEqual([1, 2, 5, 10, 20, 50, 100]);
    expect(WHOLE_INCRS.every((v) => Number.isInteger(v))).toBe(true);
    // "1.0e-4" (6 characters) did not fit uPlot's default 50 px
    expect(axisWidth(["2.0e-4", "1.0e-4"])).toBeGreaterThan(50);
    expect(axisWidth(["1", "2"])).toBe(40);
    expect(axisWidth(null)).toBe(40);
  });
});
