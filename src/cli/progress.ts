/**
 * How a job's progress looks on the operator's terminal: on a TTY one bar, redrawn in place
 * (items, bytes, speed, ETA), with failed items printed above it; otherwise one line per finished
 * item, for logs and scripts. Nothing at all with `quiet` (`--json` prints one document at the end).
 */
import type { JobProgress } from '../storage/cache-index-contract.js';
import { formatBytes } from '../storage/disk-space.js';

export interface ItemLine {
  item: string;
  outcome: string;
  ok: boolean;
  bytes: number;
  message: string | null;
}

/** Redraws at most this often on a TTY. */
const REDRAW_MS = 200;

export class ProgressView {
  readonly #out: NodeJS.WriteStream;
  readonly #label: string;
  readonly #unit: string;
  readonly #quiet: boolean;
  readonly #tty: boolean;
  readonly #started = performance.now();
  #firstBytes: number | undefined;
  #lastDraw = 0;
  #drawn = false;
  #progress: JobProgress | undefined;

  /** @param unit what items are called (`files`, `blobs`). */
  constructor(out: NodeJS.WriteStream, label: string, unit: string, quiet: boolean) {
    this.#out = out;
    this.#label = label;
    this.#unit = unit;
    this.#quiet = quiet;
    this.#tty = out.isTTY === true;
  }

  update(p: JobProgress): void {
    this.#progress = p;
    this.#firstBytes ??= p.bytesDone;
    if (this.#quiet || !this.#tty) return;
    const now = performance.now();
    if (now - this.#lastDraw < REDRAW_MS) return;
    this.#lastDraw = now;
    this.#draw();
  }

  item(line: ItemLine): void {
    if (this.#quiet) return;
    if (this.#tty && line.ok) return;
    if (this.#tty && this.#drawn) this.#out.write('\r\x1b[2K');
    this.#out.write(`${formatItem(line)}\n`);
    if (this.#tty && this.#progress) this.#draw();
  }

  /** Ends the bar's line. */
  done(): void {
    if (this.#quiet || !this.#tty) return;
    if (this.#progress) this.#draw();
    if (this.#drawn) this.#out.write('\n');
    this.#drawn = false;
  }

  #draw(): void {
    const p = this.#progress;
    if (!p) return;
    const frac = p.bytesTotal ? p.bytesDone / p.bytesTotal : p.itemsTotal ? p.itemsDone / p.itemsTotal : 0;
    const width = 24;
    const filled = Math.max(0, Math.min(width, Math.round(frac * width)));
    const elapsed = (performance.now() - this.#started) / 1000;
    const rate = elapsed > 0.5 ? (p.bytesDone - (this.#firstBytes ?? 0)) / elapsed : 0;
    const left = p.bytesTotal !== null ? p.bytesTotal - p.bytesDone : 0;
    const eta = rate > 0 && left > 0 ? ` ETA ${duration(left / rate)}` : '';
    const items = `${p.itemsDone}/${p.itemsTotal ?? '?'} ${this.#unit}${p.itemsFailed ? ` (${p.itemsFailed} failed)` : ''}`;
    const bytes = `${formatBytes(p.bytesDone)}/${p.bytesTotal === null ? '?' : formatBytes(p.bytesTotal)}`;
    const line = `${this.#label} [${'#'.repeat(filled).padEnd(width, '.')}] ${(frac * 100).toFixed(0).padStart(3)}%  ${items}  ${bytes}  ${formatBytes(rate)}/s${eta}`;
    const columns = this.#out.columns || 120;
    this.#out.write(`\r\x1b[2K${line.slice(0, columns - 1)}`);
    this.#drawn = true;
  }
}

/** `filled     1.5 MiB  path — message`. */
export function formatItem(line: ItemLine): string {
  return `${line.outcome.padEnd(11)} ${(line.bytes > 0 ? formatBytes(line.bytes) : '').padStart(10)}  ${line.item}${line.message ? `  (${line.message})` : ''}`;
}

/** `1h02m`, `3m05s`, `12s`. */
export function duration(seconds: number): string {
  const s = Math.round(seconds);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}
