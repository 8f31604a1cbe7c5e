import { fireEvent, render, screen, within } from "@testing-library/svelte";
import { describe, expect, it, vi } from "vitest";
import MethodTable from "./MethodTable.svelte";
import { GiB, METHOD_IDS, TRAINABLE, methodRows } from "./fixtures";

const CPU = { kind: "cpu", name: "AMD Ryzen 7 5800U", usable: Math.floor((24 * GiB) / 10) * 9 };

function order(): string[] {
  return screen.getAllByTestId("method-row").map((r) => r.dataset.method ?? "");
}

function row(id: string): HTMLElement {
  const r = screen.getAllByTestId("method-row").find((x) => x.dataset.method === id);
  if (!r) throw new Error(`no row ${id}`);
  return r;
}

function radio(id: string): HTMLInputElement {
  return within(row(id)).getByRole("radio") as HTMLInputElement;
}

describe("MethodTable", () => {
  it("renders one row per method with live numbers and pre-selects the recommended one", () => {
    render(MethodTable, { rows: methodRows(), device: CPU });
    // every method the engine registers, in its table order
    expect(order()).toEqual(METHOD_IDS);
    expect(order().slice(0, 4)).toEqual(["full", "freeze", "lora", "qlora"]);
    const lora = row("lora");
    expect(lora.textContent).toContain("921,600");
    expect(within(lora).getByTestId("method-percent").textContent).toBe("0.69 %");
    expect(lora.textContent).toContain("the general default");
    expect(radio("lora").checked).toBe(true);
    expect(lora.dataset.selected).toBe("true");
    expect(within(lora).getByTestId("recommended-badge")).toBeTruthy();
    expect(row("full").textContent).toContain("134,515,008");
    expect(within(row("full")).getByTestId("method-percent").textContent).toBe("100 %");
    // the recommendation explained with this device's numbers
    expect(screen.getByTestId("method-why").textContent).toContain("LoRA: on the CPU, LoRA in f32 needs 1.2 GiB of your 24.0 GiB.");
  });

  it("explains QLoRA on a small GPU where LoRA would not fit, with fits badges in words", () => {
    const usable = Math.floor((8 * GiB) / 10) * 9;
    const rows = methodRows({
      usable,
      memory: { full: 14 * GiB, freeze: 6.8 * GiB, lora: 11.2 * GiB, qlora: 5.1 * GiB, dora: 11.6 * GiB, lora_plus: 11.2 * GiB },
      recommended: "qlora",
    });
    render(MethodTable, { rows, device: { kind: "cuda", name: "RTX 3070", usable } });
    expect(screen.getByTestId("method-why").textContent).toContain("QLoRA: your GPU has 8.0 GiB; LoRA would need 11.2 GiB");
    expect(radio("qlora").checked).toBe(true);
    const badge = (id: string) => within(row(id)).getByTestId("fits-badge");
    expect(badge("lora").textContent).toContain("too big");
    expect(badge("lora").textContent).toContain("✗");
    expect(badge("lora").dataset.fits).toBe("false");
    expect(badge("qlora").textContent).toContain("fits");
    expect(badge("qlora").textContent).toContain("✓");
    // 6.8 of 7.2 GiB: fits but above 85 %
    expect(badge("freeze").textContent).toContain("tight");
  });

  it("sorts by trainable share, memory and compute with aria-sort on the header", async () => {
    render(MethodTable, { rows: methodRows(), device: CPU });
    const button = screen.getByTestId("sort-trainable");
    const th = button.closest("th");
    expect(th?.getAttribute("aria-sort")).toBe("none");
    await fireEvent.click(button);
    expect(th?.getAttribute("aria-sort")).toBe("ascending");
    const fewest = [...METHOD_IDS].sort((a, b) => TRAINABLE[a] - TRAINABLE[b]);
    expect(order()).toEqual(fewest);
    expect(order().indexOf("prompt_tuning")).toBeLessThan(order().indexOf("ia3"));
    expect(order().at(-1)).toBe("full");
    await fireEvent.click(button);
    expect(th?.getAttribute("aria-sort")).toBe("descending");
    expect(order()[0]).toBe("full");
    expect(order()[1]).toBe("freeze");

    await fireEvent.click(screen.getByTestId("sort-memory"));
    expect(th?.getAttribute("aria-sort")).toBe("none");
    expect(screen.getByTestId("sort-memory").closest("th")?.getAttribute("aria-sort")).toBe("ascending");
    expect(order()[0]).toBe("qlora");
    expect(order().at(-1)).toBe("full");

    await fireEvent.click(screen.getByTestId("sort-compute"));
    // cheapest first: very low (ia3, bitfit, prompt tuning) ... very high (full)
    expect(order().slice(0, 3)).toEqual(["ia3", "bitfit", "prompt_tuning"]);
    expect(order().at(-1)).toBe("full");
    // the selection survives re-ordering
    expect(radio("lora").checked).toBe(true);
  });

  it("moves the choice with the arrow keys and picks with Enter, as a radio group", async () => {
    const onselect = vi.fn();
    render(MethodTable, { rows: methodRows(), device: CPU, onselect });
    const lora = radio("lora");
    expect(lora.tabIndex).toBe(0);
    expect(radio("qlora").tabIndex).toBe(-1);
    lora.focus();
    await fireEvent.keyDown(lora, { key: "ArrowDown" });
    expect(onselect).toHaveBeenLastCalledWith("qlora");
    expect(radio("qlora").checked).toBe(true);
    expect(document.activeElement).toBe(radio("qlora"));
    await fireEvent.keyDown(radio("qlora"), { key: "ArrowUp" });
    await fireEvent.keyDown(radio("lora"), { key: "ArrowUp" });
    expect(onselect).toHaveBeenLastCalledWith("freeze");
    const last = METHOD_IDS[METHOD_IDS.length - 1];
    await fireEvent.keyDown(radio("freeze"), { key: "End" });
    expect(onselect).toHaveBeenLastCalledWith(last);
    expect(row(last).dataset.selected).toBe("true");
    await fireEvent.keyDown(radio(last), { key: "ArrowDown" });
    expect(onselect).toHaveBeenLastCalledWith("full");
    // a click on a row picks it too
    await fireEvent.click(row("ia3"));
    expect(onselect).toHaveBeenLastCalledWith("ia3");
    expect(radio("ia3").checked).toBe(true);
    await fireEvent.keyDown(radio("ia3"), { key: "Enter" });
    expect(onselect).toHaveBeenLastCalledWith("ia3");
  });

  it("shows a method that does not apply as it is muted, with its notes", () => {
    render(MethodTable, { rows: methodRows(), device: CPU });
    const bitfit = row("bitfit");
    expect(bitfit.classList.contains("inapplicable")).toBe(true);
    expect(bitfit.textContent).toContain("Does not apply to this model as it is");
    expect(within(bitfit).getByTestId("method-notes").textContent).toContain("bitfit.add_biases=true");
    expect(row("lora").classList.contains("inapplicable")).toBe(false);
  });
});
