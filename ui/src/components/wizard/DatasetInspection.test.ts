import { fireEvent, render, screen, within } from "@testing-library/svelte";
import { describe, expect, it } from "vitest";
import DatasetInspection from "./DatasetInspection.svelte";
import LengthHistogram from "./LengthHistogram.svelte";
import PreviewText from "./PreviewText.svelte";
import { CHATML, SAMPLE, inspection } from "./fixtures";

describe("PreviewText", () => {
  it("marks the ⟦trained⟧ spans and drops the brackets", () => {
    const { container } = render(PreviewText, { rendered: CHATML });
    const marks = container.querySelectorAll("mark.trained");
    expect(marks.length).toBeGreaterThan(0);
    const trained = [...marks].map((m) => m.textContent).join("");
    expect(trained).toBe('{"name": "Mei Nilsson", "age": 69, "city": "Cluj"}<|im_end|>');
    const text = screen.getByTestId("preview-text").textContent ?? "";
    expect(text).not.toContain("⟦");
    expect(text).not.toContain("⟧");
    expect(text).toContain("Mei Nilsson, 69, lives in Cluj");
    // the prompt is context, not marked
    const user = [...container.querySelectorAll("span")].map((s) => s.textContent).join("");
    expect(user).toContain("Extract the person's name");
    // the template's special tokens are set apart
    expect(container.querySelector(".special")?.textContent).toBe("<|im_start|>");
  });
});

describe("LengthHistogram", () => {
  it("draws one bar per bin, the seq_len line and the count over it", () => {
    const stats = { ...inspection().stats!, seq_len: 96, over_seq_len: 87 };
    render(LengthHistogram, { stats });
    const bars = screen.getAllByTestId("hist-bar");
    expect(bars.map((b) => b.dataset.count)).toEqual(["0", "12", "201", "71", "14", "2"]);
    // 201 is the tallest bar
    expect(bars[2].style.height).toBe("100%");
    // bins from 96 tokens on are past the cut-off (32-token bins: the 4th starts at 96)
    expect(bars.map((b) => b.classList.contains("over"))).toEqual([false, false, false, true, true, true]);
    const cut = screen.getByTestId("hist-cutoff");
    expect(cut.textContent).toContain("seq_len 96");
    expect(cut.style.left).toBe("50%");
    expect(screen.getByTestId("hist-over").textContent).toContain("87 of 300 records are longer than seq_len 96.");
    expect(screen.getByRole("img").getAttribute("aria-label")).toContain("max 171 tokens");
  });

  it("says every record fits when seq_len is past the longest", () => {
    render(LengthHistogram, { stats: inspection().stats! });
    expect(screen.queryByTestId("hist-cutoff")).toBeNull();
    expect(screen.getByTestId("hist-over").textContent).toContain("0 of 300");
    expect(screen.getByTestId("hist-over").textContent).toContain("Every record fits in seq_len 512.");
  });
});

describe("DatasetInspection", () => {
  it("shows format, counts, the split, the preview with a legend and the histogram", async () => {
    render(DatasetInspection, { record: SAMPLE, inspection: inspection(), hasModel: true, evalFraction: 0.1 });
    expect(screen.getByTestId("dataset-format").textContent).toBe("alpaca");
    expect(screen.getByTestId("dataset-records").textContent).toBe("300");
    expect(screen.getByTestId("dataset-split").textContent).toBe("270 train / 30 eval");
    expect(screen.getByTestId("preview-legend").textContent).toContain("trained on");
    const rows = screen.getAllByTestId("preview-row");
    expect(rows).toHaveLength(1);
    expect(within(rows[0]).getByText("line 1")).toBeTruthy();
    expect(rows[0].querySelector("mark")?.textContent).toContain('"city": "Cluj"');
    expect(screen.getByTestId("length-histogram")).toBeTruthy();
    expect(screen.queryByTestId("dataset-problems")).toBeNull();

    await fireEvent.input(screen.getByTestId("eval-fraction"), { target: { value: "0.2" } });
    expect(screen.getByTestId("dataset-split").textContent).toBe("240 train / 60 eval");
  });

  it("lists dropped records with their line numbers as an alert", () => {
    const problems = [
      "extract.jsonl:line 17: field `output`: missing",
      "extract.jsonl:line 42: field `instruction`: empty string",
    ];
    render(DatasetInspection, {
      record: { ...SAMPLE, records: 298, dropped: 2 },
      inspection: inspection({ problems }),
      hasModel: false,
    });
    const box = screen.getByTestId("dataset-problems");
    expect(box.getAttribute("role")).toBe("alert");
    expect(box.textContent).toContain("2 records were dropped");
    expect(within(box).getAllByRole("listitem").map((li) => li.textContent)).toEqual(problems);
    expect(screen.getByTestId("dataset-dropped").textContent).toBe("2");
    expect(screen.queryByTestId("preview-legend")).toBeNull();
    expect(screen.getByText(/Choose a model to see the records/)).toBeTruthy();
  });
});
