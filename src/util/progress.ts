import cliProgress from 'cli-progress';

export interface Progress {
  /** advance by n (default 1); info values appear after the bar */
  tick(n?: number, info?: Record<string, string | number>): void;
  done(): void;
}

/** A progress bar with ETA on stderr when it is a TTY; silent otherwise so stdout/stderr stay parseable. */
export function progress(label: string, total: number): Progress {
  if (!process.stderr.isTTY || process.env.CMIPRUNE_NO_PROGRESS) {
    return { tick() {}, done() {} };
  }
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% {value}/{total} | ETA {eta_formatted} | {info}`,
      hideCursor: true,
      etaBuffer: 20,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { info: '' });
  let value = 0;
  return {
    tick(n = 1, info) {
      value += n;
      const text = info ? Object.entries(info).map(([k, v]) => `${k} ${v}`).join(' ') : '';
      bar.update(value, { info: text });
    },
    done() {
      bar.stop();
    },
  };
}
