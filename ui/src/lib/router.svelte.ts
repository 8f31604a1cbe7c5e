// Hash routes: `#screen` or `#screen/arg` (a run id for `run` and `export`, a sweep id for
// `sweep`).
export type Screen =
  | "home"
  | "new"
  | "run"
  | "runs"
  | "compare"
  | "playground"
  | "serve"
  | "models"
  | "datasets"
  | "settings"
  | "export"
  | "sweep";

const SCREENS: Screen[] = ["home", "new", "run", "runs", "compare", "playground", "serve", "models", "datasets", "settings", "export", "sweep"];

function parse(hash: string): { screen: Screen; arg: string | null } {
  const [head, ...rest] = hash.replace(/^#\/?/, "").split("/");
  const screen = (SCREENS as string[]).includes(head) ? (head as Screen) : "home";
  return { screen, arg: rest.length ? decodeURIComponent(rest.join("/")) : null };
}

export const route = $state(parse(typeof location === "undefined" ? "" : location.hash));

if (typeof window !== "undefined") {
  window.addEventListener("hashchange", () => Object.assign(route, parse(location.hash)));
}

/** Navigate: `go("run", "run-3")`, `go("runs")`. */
export function go(screen: Screen, arg?: string | null): void {
  const hash = `#${screen}${arg ? `/${encodeURIComponent(arg)}` : ""}`;
  if (location.hash === hash) return;
  location.hash = hash;
  Object.assign(route, parse(hash));
}
