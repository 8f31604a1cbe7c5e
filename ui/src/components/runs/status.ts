// What a run's status means for the screens: its label key, glyph, tone and allowed actions.
// The statuses themselves are Rust's `RunState` (generated binding): a status added there fails
// the type check here until it has a glyph and a tone.
import type { MessageKey } from "../../lib/i18n";
import type { RunState } from "../../lib/bindings/RunState";

export type Status = RunState;

const GLYPH: Record<Status, string> = {
  queued: "○",
  running: "▶",
  paused: "‖",
  completed: "✓",
  cancelled: "■",
  interrupted: "!",
  failed: "✗",
  diverged: "✗",
};

export type Tone = "ok" | "warn" | "bad" | "accent" | "muted";

const TONE: Record<Status, Tone> = {
  queued: "muted",
  running: "accent",
  paused: "warn",
  completed: "ok",
  cancelled: "muted",
  interrupted: "warn",
  failed: "bad",
  diverged: "bad",
};

/** The inline wording (Home's recent runs, Export's summary): lowercase words and its own marks. */
const INLINE_GLYPH: Record<Status, string> = {
  queued: "…",
  running: "●",
  paused: "‖",
  completed: "✓",
  cancelled: "‖",
  interrupted: "‖",
  failed: "✗",
  diverged: "✗",
};

const INLINE_TONE: Record<Status, Tone> = {
  queued: "accent",
  running: "accent",
  paused: "warn",
  completed: "ok",
  cancelled: "warn",
  interrupted: "warn",
  failed: "bad",
  diverged: "bad",
};

export const STATUSES = Object.keys(GLYPH) as Status[];

export function isStatus(s: string | null | undefined): s is Status {
  return s != null && (STATUSES as readonly string[]).includes(s);
}

export function statusKey(s: string): MessageKey {
  return isStatus(s) ? (`runs.status.${s}` as MessageKey) : "runs.status.unknown";
}

export function statusGlyph(s: string): string {
  return isStatus(s) ? GLYPH[s] : "?";
}

export function statusTone(s: string): Tone {
  return isStatus(s) ? TONE[s] : "muted";
}

/** The label key of the inline wording; null: show the status as it came. */
export function inlineStatusKey(s: string): MessageKey | null {
  return isStatus(s) ? (`tools.status.${s}` as MessageKey) : null;
}

export function inlineStatusGlyph(s: string): string {
  return isStatus(s) ? INLINE_GLYPH[s] : "‖";
}

export function inlineStatusTone(s: string): Tone {
  return isStatus(s) ? INLINE_TONE[s] : "warn";
}

/** Stop and Pause apply while the run trains or waits. */
export function canControl(s: string | null | undefined): boolean {
  return s === "running" || s === "queued";
}

/** Resume applies to a run that stopped before its end. */
export function canResume(s: string | null | undefined): boolean {
  return s === "paused" || s === "cancelled" || s === "interrupted";
}

/** The run is over (for now): show its summary. */
export function isEnded(s: string | null | undefined): boolean {
  return s != null && s !== "running" && s !== "queued";
}
