import { describe, expect, it } from "vitest";
import { curlSnippet, meanRate, pythonSnippet } from "./serve";

describe("serve snippets", () => {
  it("point the openai client at the URL and model", () => {
    const s = pythonSnippet("http://127.0.0.1:8080/v1", "run-3", null);
    expect(s).toContain('base_url="http://127.0.0.1:8080/v1"');
    expect(s).toContain('api_key="none"');
    expect(s).toContain('model="run-3"');
  });

  it("send the key only when one is set, and quote the body for a shell", () => {
    expect(curlSnippet("http://h/v1", "m", null)).not.toContain("Authorization");
    const c = curlSnippet("http://h/v1", "it's", "k1");
    expect(c).toContain('-H "Authorization: Bearer k1"');
    expect(c).toContain("it'\\''s");
    expect(c.startsWith("curl http://h/v1/chat/completions")).toBe(true);
  });

  it("rate is zero before any token", () => {
    expect(meanRate(0, 0)).toBe(0);
    expect(meanRate(50, 2)).toBe(25);
  });
});
