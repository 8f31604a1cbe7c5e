// The playground's prompts and answers for this app session: kept while the window is open,
// across visits to other screens, never written to disk.
import type { ChatAnswer } from "../../lib/ipc";

export type Exchange = {
  id: number;
  model: string;
  prompt: string;
  adapters: (string | null)[];
  maxTokens: number;
  temperature: number;
  answers: ChatAnswer[] | null;
  error: string | null;
  /** Two samples of one model rather than one answer per model. */
  samples?: boolean;
  /** What was kept from this exchange for preference tuning, newest last. */
  kept?: string[];
};

export const playground = $state<{ history: Exchange[]; nextId: number }>({ history: [], nextId: 0 });

export function clearPlaygroundHistory(): void {
  playground.history = [];
  playground.nextId = 0;
}
