// WebKitGTK reports the POSIX locale as `navigator.language` when LANG is unset or `C`
// ("C", "POSIX", "en_US.UTF-8"), and Intl refuses such tags, so every number formatter built
// from it throws (uPlot builds one when it loads). Replace an unusable tag with the nearest
// BCP 47 one, or English.
export function usableLanguage(tag: string | undefined): string {
  const candidates = [tag ?? "", (tag ?? "").split(/[.@]/)[0].replace(/_/g, "-")];
  for (const c of candidates) {
    if (!c || c === "C" || c === "POSIX") continue;
    try {
      if (Intl.NumberFormat.supportedLocalesOf([c]).length > 0) return c;
    } catch {
      // not a language tag
    }
  }
  return "en-US";
}

export function guardNavigatorLanguage(): void {
  const fixed = usableLanguage(navigator.language);
  if (fixed === navigator.language) return;
  Object.defineProperty(navigator, "language", { value: fixed, configurable: true });
  Object.defineProperty(navigator, "languages", { value: [fixed], configurable: true });
}
