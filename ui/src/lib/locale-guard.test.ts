import { describe, expect, it } from "vitest";
import { usableLanguage } from "./locale-guard";

describe("usableLanguage", () => {
  it("keeps a valid tag and repairs POSIX ones", () => {
    expect(usableLanguage("zh-CN")).toBe("zh-CN");
    expect(usableLanguage("en_GB.UTF-8")).toBe("en-GB");
    expect(usableLanguage("C")).toBe("en-US");
    expect(usableLanguage("POSIX")).toBe("en-US");
    expect(usableLanguage(undefined)).toBe("en-US");
    expect(() => new Intl.NumberFormat(usableLanguage("C"))).not.toThrow();
  });
});
