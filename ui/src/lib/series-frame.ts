// Redraw coalescing: however many updates arrive, `fn` runs at most once per animation frame
// and no more often than every `minGapMs` (50 ms: ≤ 20 redraws per second).

export interface FrameThrottle {
  request(): void;
  cancel(): void;
}

export function frameThrottle(fn: () => void, minGapMs = 50): FrameThrottle {
  const raf: (cb: () => void) => number =
    typeof requestAnimationFrame === "function" ? (cb) => requestAnimationFrame(cb) : (cb) => setTimeout(cb, 16) as unknown as number;
  const caf: (h: number) => void =
    typeof cancelAnimationFrame === "function" ? (h) => cancelAnimationFrame(h) : (h) => clearTimeout(h);
  let frame: number | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let last = -Infinity;

  const run = () => {
    frame = null;
    const now = performance.now();
    const wait = last + minGapMs - now;
    if (wait > 0) {
      timer = setTimeout(() => {
        timer = null;
        frame = raf(run);
      }, wait);
      return;
    }
    last = now;
    fn();
  };

  return {
    request() {
      if (frame == null && timer == null) frame = raf(run);
    },
    cancel() {
      if (frame != null) caf(frame);
      if (timer != null) clearTimeout(timer);
      frame = null;
      timer = null;
    },
  };
}
