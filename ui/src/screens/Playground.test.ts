import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import { beforeEach, describe, expect, it, vi } from "vitest";
import Playground from "./Playground.svelte";
import { api } from "../lib/ipc";
import { deferred, model, run } from "../components/tools/test-fixtures";
import { clearPlaygroundHistory } from "../components/tools/playground-history.svelte";

vi.mock("../lib/ipc", () => ({
  api: { modelsList: vi.fn(), runsList: vi.fn(), runShow: vi.fn(), chat: vi.fn(), preferenceRecord: vi.fn() },
}));

const other = model({ id: "qwen2-5-0-5b-instruct", name: "Qwen2.5 0.5B Instruct" });

beforeEach(() => {
  clearPlaygroundHistory();
  vi.mocked(api.modelsList).mockResolvedValue([model(), other]);
  vi.mocked(api.runsList).mockResolvedValue([
    run({ id: "run-1" }),
    run({ id: "run-2", method: "dora", best_eval_loss: 0.39 }),
    run({ id: "run-3", status: "running" }),
    run({ id: "run-4", model: other.id }),
  ]);
  vi.mocked(api.runShow).mockImplementation(async (id: string) => run({ id }));
  vi.mocked(api.chat).mockReset();
});

const answer = (adapter: string | null, text: string) => ({ adapter, text, tokens: 20, seconds: 0.5, tokens_per_s: 40, switch_s: adapter ? 0.12 : 0 });

const kept = (name: string, records: number) => ({ id: "playground-pairs", name, records }) as Awaited<ReturnType<typeof api.preferenceRecord>>;

describe("Playground", () => {
  it("keeps a preferred answer, edited, as pairs and a thumbs-down as a rating", async () => {
    vi.mocked(api.chat).mockResolvedValue([answer(null, "I think it is Mei."), answer("run-1", '{"name": "Mei"}'), answer("run-2", "Mei?")]);
    vi.mocked(api.preferenceRecord).mockResolvedValueOnce(kept("Playground preferences", 1)).mockResolvedValueOnce(kept("Playground preferences", 2))
      .mockResolvedValueOnce(kept("Playground ratings", 1));
    render(Playground, { arg: "run-1" });
    await waitFor(() => expect((screen.getByTestId("playground-adapter-a") as HTMLSelectElement).value).toBe("run-1"));
    await fireEvent.change(screen.getByTestId("playground-adapter-b"), { target: { value: "run-2" } });
    await fireEvent.input(screen.getByTestId("playground-prompt"), { target: { value: "Mei Nilsson, 69, Cluj" } });
    await fireEvent.click(screen.getByTestId("playground-send"));
    await screen.findAllByTestId("playground-answer");

    const better = screen.getAllByTestId("playground-better").find((b) => b.dataset.adapter === "run-1")!;
    await fireEvent.click(better);
    const edit = screen.getByTestId("playground-chosen-text") as HTMLTextAreaElement;
    expect(edit.value).toBe('{"name": "Mei"}');
    await fireEvent.input(edit, { target: { value: '{"name": "Mei", "age": 69}' } });
    await fireEvent.click(screen.getByTestId("playground-save-pair"));
    // one pair per other answer, the edit as the chosen answer, the source kept with it
    await waitFor(() => expect(api.preferenceRecord).toHaveBeenCalledTimes(2));
    const [first, second] = vi.mocked(api.preferenceRecord).mock.calls.map((c) => c[0]);
    expect(first).toMatchObject({ prompt: "Mei Nilsson, 69, Cluj", judgement: { kind: "pair", chosen: '{"name": "Mei", "age": 69}', rejected: "I think it is Mei." } });
    expect(first.source).toMatchObject({ model: "smollm2-135m-instruct-q4-1", chosen_by: "run-1", rejected_by: null, edited: true });
    expect(second.judgement).toMatchObject({ rejected: "Mei?" });
    expect((await screen.findByTestId("playground-kept")).textContent).toContain("Playground preferences (records: 2)");
    expect(screen.queryByTestId("playground-chosen-text")).toBeNull();

    const bad = screen.getAllByTestId("playground-bad").find((b) => b.dataset.adapter === "base")!;
    await fireEvent.click(bad);
    await waitFor(() => expect(api.preferenceRecord).toHaveBeenCalledTimes(3));
    expect(vi.mocked(api.preferenceRecord).mock.calls[2][0].judgement).toEqual({ kind: "rating", completion: "I think it is Mei.", desirable: false });
    await waitFor(() => expect(screen.getAllByTestId("playground-kept")).toHaveLength(2));
  });

  it("asks one model twice for two samples to judge", async () => {
    vi.mocked(api.chat).mockResolvedValue([answer("run-1", "Mei"), answer("run-1", "Mei Nilsson")]);
    render(Playground, { arg: "run-1" });
    await waitFor(() => expect((screen.getByTestId("playground-adapter-a") as HTMLSelectElement).value).toBe("run-1"));
    await fireEvent.click(screen.getByTestId("playground-two-samples"));
    expect((screen.getByTestId("playground-adapter-b") as HTMLSelectElement).disabled).toBe(true);
    await fireEvent.input(screen.getByTestId("playground-prompt"), { target: { value: "Who?" } });
    await fireEvent.click(screen.getByTestId("playground-send"));
    expect(api.chat).toHaveBeenCalledWith("smollm2-135m-instruct-q4-1", ["run-1", "run-1"], "Who?", 128, 0.7);
    const cols = await screen.findAllByTestId("playground-answer");
    expect(cols.map((c) => c.querySelector("h3")!.textContent)).toEqual(["Adapter A · run-1 (lora) · sample 1", "Adapter A · run-1 (lora) · sample 2"]);
    expect(screen.getAllByTestId("playground-better")).toHaveLength(2);
  });

  it("preselects the run's model and adapter and offers only usable runs of that model", async () => {
    render(Playground, { arg: "run-1" });
    const a = (await screen.findByTestId("playground-adapter-a")) as HTMLSelectElement;
    await waitFor(() => expect(a.value).toBe("run-1"));
    expect((screen.getByTestId("playground-model") as HTMLSelectElement).value).toBe("smollm2-135m-instruct-q4-1");
    const options = [...a.options].map((o) => o.value);
    expect(options).toEqual(["", "run-1", "run-2"]);
  });

  it("sends base + A + B in one chat call and shows three columns with their numbers", async () => {
    vi.mocked(api.chat).mockResolvedValue([answer(null, "I think it is Mei."), answer("run-1", '{"name": "Mei"}'), answer("run-2", '{"name": "Mei", "age": 69}')]);
    render(Playground, { arg: "run-1" });
    await waitFor(() => expect((screen.getByTestId("playground-adapter-a") as HTMLSelectElement).value).toBe("run-1"));
    await fireEvent.change(screen.getByTestId("playground-adapter-b"), { target: { value: "run-2" } });
    await fireEvent.input(screen.getByTestId("playground-temperature"), { target: { value: "0.2" } });
    await fireEvent.input(screen.getByTestId("playground-max-tokens"), { target: { value: "64" } });
    await fireEvent.input(screen.getByTestId("playground-prompt"), { target: { value: "  Mei Nilsson, 69, Cluj  " } });
    await fireEvent.click(screen.getByTestId("playground-send"));

    expect(api.chat).toHaveBeenCalledWith("smollm2-135m-instruct-q4-1", [null, "run-1", "run-2"], "Mei Nilsson, 69, Cluj", 64, 0.2);
    const cols = await screen.findAllByTestId("playground-answer");
    expect(cols.map((c) => c.dataset.adapter)).toEqual(["base", "run-1", "run-2"]);
    expect(cols[0].textContent).toContain("I think it is Mei.");
    expect(cols[2].textContent).toContain('"age": 69');
    expect(cols[1].textContent).toContain("20 tokens");
    expect(cols[1].textContent).toContain("500 ms");
    expect(cols[1].textContent).toContain("40.0 tokens/s");
    expect(cols[1].textContent).toContain("run-1 (lora)");
  });

  it("Ctrl+Enter sends; history keeps earlier exchanges, newest first", async () => {
    const first = deferred<ReturnType<typeof answer>[]>();
    vi.mocked(api.chat).mockReturnValueOnce(first.promise).mockResolvedValueOnce([answer(null, "second")]);
    render(Playground, {});
    await waitFor(() => expect((screen.getByTestId("playground-model") as HTMLSelectElement).value).toBe("smollm2-135m-instruct-q4-1"));
    const prompt = screen.getByTestId("playground-prompt");
    await fireEvent.input(prompt, { target: { value: "one" } });
    await fireEvent.keyDown(prompt, { key: "Enter", ctrlKey: true });
    expect(api.chat).toHaveBeenCalledWith("smollm2-135m-instruct-q4-1", [null], "one", 128, 0.7);
    // while waiting the send button is busy, so a second send does not start
    expect((screen.getByTestId("playground-send") as HTMLButtonElement).disabled).toBe(true);
    first.resolve([answer(null, "first")]);
    await screen.findByText("first");
    await fireEvent.input(prompt, { target: { value: "two" } });
    await fireEvent.keyDown(prompt, { key: "Enter", metaKey: true });
    await screen.findByText("second");
    const exchanges = screen.getAllByTestId("playground-exchange");
    expect(exchanges).toHaveLength(2);
    expect(within(exchanges[0]).getByTestId("playground-answer").textContent).toContain("second");
    expect(within(exchanges[1]).getByTestId("playground-answer").textContent).toContain("first");
  });

  it("keeps the session's history when the screen is left and opened again", async () => {
    vi.mocked(api.chat).mockResolvedValue([answer(null, "kept answer")]);
    const first = render(Playground, {});
    await waitFor(() => expect((screen.getByTestId("playground-model") as HTMLSelectElement).value).not.toBe(""));
    await fireEvent.input(screen.getByTestId("playground-prompt"), { target: { value: "remember me" } });
    await fireEvent.click(screen.getByTestId("playground-send"));
    await screen.findByText("kept answer");
    first.unmount();
    render(Playground, {});
    expect(screen.getByText("remember me")).toBeTruthy();
    expect(screen.getByText("kept answer")).toBeTruthy();
  });

  it("plain Enter does not send; a backend error shows as an alert", async () => {
    vi.mocked(api.chat).mockRejectedValue("run run-2 has no checkpoint yet (it is running)");
    render(Playground, { arg: "run-1" });
    await waitFor(() => expect((screen.getByTestId("playground-adapter-a") as HTMLSelectElement).value).toBe("run-1"));
    const prompt = screen.getByTestId("playground-prompt");
    await fireEvent.input(prompt, { target: { value: "hi" } });
    await fireEvent.keyDown(prompt, { key: "Enter" });
    expect(api.chat).not.toHaveBeenCalled();
    await fireEvent.click(screen.getByTestId("playground-send"));
    expect((await screen.findByRole("alert")).textContent).toContain("run run-2 has no checkpoint yet (it is running)");
    expect(screen.queryAllByTestId("playground-answer")).toHaveLength(0);
  });

  it("changing the model drops adapters of the other model", async () => {
    render(Playground, { arg: "run-1" });
    const a = screen.getByTestId("playground-adapter-a") as HTMLSelectElement;
    await waitFor(() => expect(a.value).toBe("run-1"));
    await fireEvent.change(screen.getByTestId("playground-model"), { target: { value: other.id } });
    expect(a.value).toBe("");
    expect([...a.options].map((o) => o.value)).toEqual(["", "run-4"]);
  });
});
